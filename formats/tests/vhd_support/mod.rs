//! Shared helpers of the VHD, VHDX and VDI tests: the image generator, the
//! qemu-img oracle and comparisons. A missing qemu-img fails the test loudly.
#![allow(dead_code)]

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use v2x_formats::{open_image, BlockSource, ExtentKind, OpenOptions};

/// Runs a tool and returns its stdout; panics with its stderr when it fails
/// or is not installed (a test must never pass without its oracle).
pub fn run_tool(prog: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{prog} is required by this test and could not be run: {e}"));
    assert!(
        out.status.success(),
        "{prog} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs `testdata/gen-vhd.sh` into a fresh temporary directory.
pub fn generate() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/gen-vhd.sh");
    run_tool("sh", &[script.to_str().unwrap(), dir.path().to_str().unwrap()]);
    dir
}

/// Converts `img` to raw with qemu-img (the oracle) and returns the raw path.
pub fn qemu_raw(img: &Path, fmt: &str, dir: &Path) -> PathBuf {
    let out = dir.join(format!(
        "{}.oracle.raw",
        img.file_name().unwrap().to_string_lossy()
    ));
    run_tool(
        "qemu-img",
        &[
            "convert",
            "-f",
            fmt,
            "-O",
            "raw",
            img.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    out
}

/// Opens `path` with default options.
pub fn open(path: &Path) -> Box<dyn BlockSource> {
    open_image(path, &OpenOptions::default()).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
}

/// Asserts that `src` reads exactly like the raw file `raw`, in 1 MiB reads
/// plus a few unaligned ones, and that its map covers every non-zero byte.
pub fn assert_same_as_raw(src: &dyn BlockSource, raw: &Path) {
    let want = std::fs::read(raw).unwrap();
    assert_eq!(src.size(), want.len() as u64, "size of {}", raw.display());
    let mut got = vec![0xa5u8; want.len()];
    for (i, chunk) in got.chunks_mut(1 << 20).enumerate() {
        src.read_at((i as u64) << 20, chunk).unwrap();
    }
    if got != want {
        let at = got.iter().zip(&want).position(|(a, b)| a != b).unwrap();
        panic!("{}: first difference at byte {at:#x}", raw.display());
    }
    for (off, len) in [(1u64, 1000usize), (511, 1026), (0x1ff_f00, 0x300)] {
        if off + len as u64 <= src.size() {
            let mut b = vec![0x5au8; len];
            src.read_at(off, &mut b).unwrap();
            assert_eq!(
                b,
                want[off as usize..off as usize + len],
                "unaligned read at {off}"
            );
        }
    }
    let map = src.map(0, src.size()).unwrap();
    assert_eq!(map.first().map(|e| e.start), Some(0));
    assert_eq!(map.last().map(|e| e.end()), Some(src.size()));
    for w in map.windows(2) {
        assert_eq!(w[0].end(), w[1].start, "map is not contiguous");
    }
    for e in &map {
        if e.kind != ExtentKind::Data {
            let s = &want[e.start as usize..e.end() as usize];
            assert!(s.iter().all(|b| *b == 0), "non-zero bytes in hole {e:?}");
        }
    }
}

/// sha256 of all guest bytes of `src`, read in 4 MiB pieces.
pub fn sha256(src: &dyn BlockSource) -> String {
    sha256_with_prefix(src, None).0
}

/// sha256 of all guest bytes of `src`, and of its first `prefix` bytes when
/// given (to compare with an oracle that reads a shorter disk).
pub fn sha256_with_prefix(src: &dyn BlockSource, prefix: Option<u64>) -> (String, Option<String>) {
    let hex = |h: Sha256| {
        h.finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let mut h = Sha256::new();
    let mut at_prefix = None;
    let mut buf = vec![0u8; 4 << 20];
    let mut off = 0;
    loop {
        if Some(off) == prefix {
            at_prefix = Some(hex(h.clone()));
        }
        if off >= src.size() {
            break;
        }
        let mut n = (src.size() - off).min(buf.len() as u64);
        if let Some(p) = prefix.filter(|p| *p > off) {
            n = n.min(p - off);
        }
        let n = n as usize;
        src.read_at(off, &mut buf[..n]).unwrap();
        h.update(&buf[..n]);
        off += n as u64;
    }
    (hex(h), at_prefix)
}

/// Reads `src` from four threads at once in interleaved 1 MiB pieces and
/// checks every piece against the raw file `raw`.
pub fn assert_parallel_reads(src: &dyn BlockSource, raw: &Path) {
    let want = std::fs::read(raw).unwrap();
    let pieces = want.len().div_ceil(1 << 20);
    std::thread::scope(|s| {
        for t in 0..4 {
            let want = &want;
            s.spawn(move || {
                let mut buf = vec![0u8; 1 << 20];
                for p in (t..pieces).step_by(4).chain((0..pieces).rev().skip(t).step_by(4)) {
                    let off = p << 20;
                    let n = (want.len() - off).min(buf.len());
                    src.read_at(off as u64, &mut buf[..n]).unwrap();
                    assert!(buf[..n] == want[off..off + n], "piece {p} read by thread {t}");
                }
            });
        }
    });
}
