//! Shared helpers for tests that use qemu-img / qemu-io as the oracle.
//! A missing tool fails the test loudly: a skipped oracle test is a defect.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use v2x_formats::block::{BlockSource, ExtentKind};
use v2x_formats::open::{open_image, BackingPolicy, OpenOptions};

/// Runs `prog args...`, panicking with its stderr if it is missing or fails.
pub fn run(prog: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(prog).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run {prog} (is QEMU installed? these tests need qemu-img and qemu-io): {e}")
    });
    assert!(
        out.status.success(),
        "{prog} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs qemu-img.
pub fn qemu_img(args: &[&str]) -> Vec<u8> {
    run("qemu-img", args)
}

/// Runs qemu-io on a qcow2 image with one or more `-c` commands.
pub fn qemu_io(img: &Path, cmds: &[&str]) {
    let mut args = vec!["-f", "qcow2"];
    for c in cmds {
        args.push("-c");
        args.push(c);
    }
    let p = img.to_str().unwrap();
    args.push(p);
    run("qemu-io", &args);
}

/// A deterministic disk pattern: 64 KiB chunks cycling through random-looking
/// bytes, a compressible text-like run, and zeros (so qemu leaves holes).
pub fn pattern(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for (i, chunk) in v.chunks_mut(65536).enumerate() {
        match i % 5 {
            0 | 3 => {
                for b in chunk.iter_mut() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *b = x as u8;
                }
            }
            1 => {
                for (j, b) in chunk.iter_mut().enumerate() {
                    *b = b"v2x qcow2 reader test pattern "[(j + i) % 30];
                }
            }
            2 => {}
            _ => {
                // Mostly zero with a few set bytes: one data cluster at most cluster sizes.
                chunk[100] = i as u8;
            }
        }
    }
    v
}

/// Writes `data` as a raw file and converts it to qcow2 with `-o opts` (plus `extra` args).
pub fn make_qcow2(dir: &Path, name: &str, data: &[u8], opts: &str, extra: &[&str]) -> PathBuf {
    let raw = dir.join(format!("{name}.src.raw"));
    std::fs::write(&raw, data).unwrap();
    let out = dir.join(name);
    let mut args = vec!["convert", "-f", "raw", "-O", "qcow2"];
    args.extend_from_slice(extra);
    if !opts.is_empty() {
        args.push("-o");
        args.push(opts);
    }
    args.push(raw.to_str().unwrap());
    args.push(out.to_str().unwrap());
    qemu_img(&args);
    out
}

/// Opens an image with backing files allowed within its directory.
pub fn open(path: &Path) -> Box<dyn BlockSource> {
    open_image(path, &OpenOptions::default()).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// Options for a chain whose files all live in one directory.
pub fn opts_any() -> OpenOptions {
    OpenOptions {
        backing: BackingPolicy::Any,
        ..OpenOptions::default()
    }
}

/// The disk as qemu-img reads it.
pub fn qemu_raw(path: &Path) -> Vec<u8> {
    let out = path.with_extension("oracle.raw");
    qemu_img(&[
        "convert",
        "-O",
        "raw",
        path.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    let v = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    v
}

/// Compares our reads of `src` with qemu's view of `path`: 1 MiB requests,
/// then a sweep of odd-sized requests at odd offsets.
pub fn assert_reads_match(path: &Path, src: &dyn BlockSource) {
    let want = qemu_raw(path);
    assert_eq!(
        src.size(),
        want.len() as u64,
        "virtual size of {}",
        path.display()
    );
    let mut buf = vec![0xa5u8; 1 << 20];
    for (i, chunk) in want.chunks(1 << 20).enumerate() {
        let b = &mut buf[..chunk.len()];
        b.fill(0xa5);
        src.read_at((i << 20) as u64, b).unwrap();
        if b != chunk {
            let at = b.iter().zip(chunk).position(|(x, y)| x != y).unwrap();
            panic!("{}: byte {:#x} differs from qemu", path.display(), (i << 20) + at);
        }
    }
    let mut off = 0usize;
    let mut len = 1usize;
    while off < want.len() {
        let n = len.min(want.len() - off);
        let b = &mut buf[..n];
        b.fill(0x5a);
        src.read_at(off as u64, b).unwrap();
        assert!(
            b == &want[off..off + n],
            "{}: read {off:#x}+{n:#x} differs",
            path.display()
        );
        off += n + 4093;
        len = len * 3 % 200_003 + 1;
    }
}

/// One extent of `qemu-img map --output=json`.
#[derive(Debug)]
pub struct QemuExtent {
    pub start: u64,
    pub length: u64,
    pub depth: u32,
    pub present: bool,
    pub zero: bool,
    pub data: bool,
    pub compressed: bool,
}

/// qemu's allocation map of `path`.
pub fn qemu_map(path: &Path) -> Vec<QemuExtent> {
    let out = qemu_img(&["map", "--output=json", path.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| QemuExtent {
            start: e["start"].as_u64().unwrap(),
            length: e["length"].as_u64().unwrap(),
            depth: e["depth"].as_u64().unwrap() as u32,
            present: e["present"].as_bool().unwrap(),
            zero: e["zero"].as_bool().unwrap(),
            data: e["data"].as_bool().unwrap(),
            // qemu 8+ says "compressed"; qemu 7.2 omits the key and gives a
            // compressed cluster no host "offset".
            compressed: e["compressed"].as_bool().unwrap_or_else(|| {
                e["data"].as_bool() == Some(true)
                    && e["present"].as_bool() == Some(true)
                    && e.get("offset").is_none()
            }),
        })
        .collect()
}

/// Checks our map against qemu's: exact coverage, our Data covers qemu's data
/// (at the same depth), qemu's zero ranges are ours to skip too.
pub fn assert_map_matches(path: &Path, src: &dyn BlockSource) {
    let ours = src.map(0, src.size()).unwrap();
    assert_eq!(ours.first().map(|e| e.start), Some(0));
    assert_eq!(ours.last().map(|e| e.end()), Some(src.size()));
    for w in ours.windows(2) {
        assert_eq!(w[0].end(), w[1].start, "map must be contiguous");
        assert!(
            w[0].kind != w[1].kind || w[0].layer != w[1].layer,
            "unmerged neighbours {w:?}"
        );
    }
    for q in qemu_map(path) {
        let part = src.map(q.start, q.length).unwrap();
        for e in &part {
            if q.data && !q.zero {
                assert_eq!(
                    (e.kind, e.layer),
                    (ExtentKind::Data, q.depth),
                    "{}: qemu says data at depth {} in {q:?}, we say {e:?}",
                    path.display(),
                    q.depth
                );
            } else if !q.data {
                assert!(
                    e.kind.reads_as_zero(),
                    "{}: qemu says {q:?} holds no data, we say {e:?}",
                    path.display()
                );
                if !q.present {
                    assert_eq!(
                        e.kind,
                        ExtentKind::Unallocated,
                        "{}: {q:?} vs {e:?}",
                        path.display()
                    );
                }
            }
        }
    }
}

/// Full oracle check of one image.
pub fn check_image(path: &Path) {
    let src = open(path);
    assert_reads_match(path, src.as_ref());
    assert_map_matches(path, src.as_ref());
}

/// Opens `path` expecting failure, and returns the error.
pub fn open_err(path: &Path, opts: &OpenOptions) -> v2x_formats::Error {
    match open_image(path, opts) {
        Ok(_) => panic!("{} opened, but should have been refused", path.display()),
        Err(e) => e,
    }
}
