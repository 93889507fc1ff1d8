//! Entry points shared by the cargo-fuzz targets and the corpus replay tests.
//!
//! Each takes arbitrary bytes, opens them as one format with backing files
//! refused, and drives the allocation map and reads over a bounded amount of
//! the disk. Any error is fine; a panic, hang or huge allocation is a bug.

use crate::block::{BlockSource, ExtentKind};
use crate::detect::Format;
use crate::file::HostFile;
use crate::open::{BackingPolicy, OpenOptions, Opener};
use std::path::Path;

/// Most guest bytes one fuzz input may make us read.
const MAX_FUZZ_READ: u64 = 16 << 20;

/// Opens `data` as `format` and exercises map and reads. Returns whether it opened.
pub fn exercise_bytes(format: Format, data: &[u8]) -> bool {
    let opts = OpenOptions {
        backing: BackingPolicy::Refuse,
        ..OpenOptions::default()
    };
    let Ok(opener) = Opener::new(Path::new("fuzz-input"), &opts) else {
        return false;
    };
    let file = HostFile::from_bytes("fuzz-input", data.to_vec());
    match opener.open_file(file, Some(format), 0) {
        Ok(src) => {
            exercise_source(src.as_ref());
            true
        }
        Err(_) => false,
    }
}

/// Maps the first part of `src`, prefetches it, and reads what the map calls data.
pub fn exercise_source(src: &dyn BlockSource) {
    let _ = src.info();
    let len = src.size().min(1 << 30);
    let Ok(map) = src.map(0, len) else { return };
    // Walks the same tables as the map; must not panic whatever they say.
    src.prefetch(0, len);
    let mut budget = MAX_FUZZ_READ;
    let mut buf = vec![0u8; 65536];
    for e in map {
        if budget == 0 {
            break;
        }
        let n = e.len.min(buf.len() as u64).min(budget);
        let _ = src.read_at(e.start, &mut buf[..n as usize]);
        if e.kind != ExtentKind::Data {
            // Holes must read as zeros.
            if let Ok(()) = src.read_at(e.start, &mut buf[..n as usize]) {
                assert!(
                    buf[..n as usize].iter().all(|b| *b == 0),
                    "hole at {:#x} is not zero",
                    e.start
                );
            }
        }
        budget -= n;
    }
}
