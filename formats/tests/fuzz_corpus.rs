//! Replays every saved fuzz input and every crasher as an ordinary test, so
//! stable CI covers what the fuzzers found. Inputs live in
//! `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` (crashers, each
//! named after the bug it found).

use std::path::Path;
use v2x_formats::detect::Format;
use v2x_formats::fuzzing::exercise_bytes;

fn replay(target: &str, format: Format) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut n = 0;
    for dir in ["corpus", "regressions"] {
        let d = root.join(dir).join(target);
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if !p.is_file() {
                continue;
            }
            let data = std::fs::read(&p).unwrap();
            let start = std::time::Instant::now();
            exercise_bytes(format, &data);
            assert!(
                start.elapsed().as_secs() < 5,
                "{} took {:?}",
                p.display(),
                start.elapsed()
            );
            n += 1;
        }
    }
    assert!(
        n > 0,
        "no saved fuzz inputs for {target}: the corpus must not be empty"
    );
}

#[test]
fn qcow2_corpus() {
    replay("qcow2", Format::Qcow2);
}

#[test]
fn vhd_corpus() {
    replay("vhd", Format::Vhd);
}

#[test]
fn vhdx_corpus() {
    replay("vhdx", Format::Vhdx);
}

#[test]
fn vdi_corpus() {
    replay("vdi", Format::Vdi);
}

#[test]
fn vmdk_corpus() {
    replay("vmdk", Format::VmdkSparse);
}

#[test]
fn vmdk_cowd_corpus() {
    replay("vmdk_cowd", Format::VmdkCowd);
}

/// The descriptor target parses text only (opening would open extent files).
#[test]
fn vmdk_descriptor_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut n = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join("vmdk_descriptor")) else {
            continue;
        };
        for e in entries {
            let data = std::fs::read(e.unwrap().path()).unwrap();
            let _ = v2x_formats::vmdk::Descriptor::parse(&data);
            n += 1;
        }
    }
    assert!(n > 0, "no saved fuzz inputs for vmdk_descriptor");
}

/// The hand-made VMDK seeds must open: a seed that fails at the header
/// teaches the fuzzer nothing about grain tables and markers.
#[test]
fn vmdk_seeds_open() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    for (dir, format) in [("vmdk", Format::VmdkSparse), ("vmdk_cowd", Format::VmdkCowd)] {
        for e in std::fs::read_dir(root.join(dir)).unwrap() {
            let p = e.unwrap().path();
            let data = std::fs::read(&p).unwrap();
            assert!(exercise_bytes(format, &data), "{} does not open", p.display());
        }
    }
}
