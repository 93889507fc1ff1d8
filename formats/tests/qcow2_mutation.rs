//! Mutation tests: a qemu-made image with one field changed at a documented
//! offset must be refused with the exact error kind, and never panic.

mod common;

use common::*;
use std::path::PathBuf;
use v2x_formats::block::BlockSource;
use v2x_formats::detect::Format;
use v2x_formats::fuzzing::exercise_bytes;
use v2x_formats::open::{open_image, OpenOptions};
use v2x_formats::Error;

const L1_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}
fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}
fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}
fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

/// A qemu-made image (64 KiB clusters, 2 MiB) and its bytes.
struct Fixture {
    dir: tempfile::TempDir,
    bytes: Vec<u8>,
}

impl Fixture {
    fn new(opts: &str, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let img = make_qcow2(dir.path(), "base.qcow2", &pattern(2 << 20), opts, extra);
        let bytes = std::fs::read(img).unwrap();
        Fixture { dir, bytes }
    }

    fn l1_offset(&self) -> usize {
        be64(&self.bytes, 40) as usize
    }

    /// File offset of the first L2 table.
    fn l2_offset(&self) -> usize {
        (be64(&self.bytes, self.l1_offset()) & L1_OFFSET_MASK) as usize
    }

    /// Writes a copy changed by `f` and opens it as qcow2 (no probing).
    fn open_mutated(&self, f: impl FnOnce(&mut Vec<u8>)) -> v2x_formats::Result<Box<dyn BlockSource>> {
        let mut b = self.bytes.clone();
        f(&mut b);
        let p = self.write(&b);
        let opts = OpenOptions {
            format: Some(Format::Qcow2),
            ..OpenOptions::default()
        };
        open_image(&p, &opts)
    }

    fn write(&self, b: &[u8]) -> PathBuf {
        let p = self.dir.path().join("mutated.qcow2");
        std::fs::write(&p, b).unwrap();
        p
    }

    fn err(&self, f: impl FnOnce(&mut Vec<u8>)) -> Error {
        match self.open_mutated(f) {
            Ok(_) => panic!("mutated image opened"),
            Err(e) => e,
        }
    }
}

fn assert_corrupt_at(e: Error, offset: u64) {
    match e {
        Error::Corrupt { offset: o, .. } => assert_eq!(o, offset, "{e}"),
        other => panic!("expected Corrupt at {offset:#x}, got {other:?}"),
    }
}

fn assert_limit(e: Error, what: &str) {
    match e {
        Error::LimitExceeded { what: w, .. } => assert_eq!(w, what),
        other => panic!("expected LimitExceeded({what}), got {other:?}"),
    }
}

/// Reads the whole disk, returning the first error.
fn read_all(src: &dyn BlockSource) -> v2x_formats::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0;
    while off < src.size() {
        let n = (src.size() - off).min(1 << 20);
        src.read_at(off, &mut buf[..n as usize])?;
        off += n;
    }
    Ok(())
}

#[test]
fn magic_and_version() {
    let fx = Fixture::new("", &[]);
    assert_corrupt_at(fx.err(|b| b[0] = b'X'), 0);
    assert!(matches!(fx.err(|b| put32(b, 4, 1)), Error::Unsupported(_)));
    assert!(matches!(fx.err(|b| put32(b, 4, 4)), Error::Unsupported(_)));
}

#[test]
fn cluster_bits() {
    let fx = Fixture::new("", &[]);
    assert_limit(fx.err(|b| put32(b, 20, 30)), "qcow2 cluster_bits");
    assert_corrupt_at(fx.err(|b| put32(b, 20, 8)), 20);
    // A smaller, valid cluster size makes the L1 table too small for the disk.
    assert_corrupt_at(fx.err(|b| put32(b, 20, 9)), 36);
}

#[test]
fn virtual_size() {
    let fx = Fixture::new("", &[]);
    assert_limit(fx.err(|b| put64(b, 24, 1 << 60)), "qcow2 virtual size");
    assert_corrupt_at(fx.err(|b| put64(b, 24, 1 << 40)), 36);
}

#[test]
fn crypt_method() {
    let fx = Fixture::new("", &[]);
    assert!(matches!(fx.err(|b| put32(b, 32, 1)), Error::Unsupported(m) if m.contains("AES")));
    assert!(matches!(fx.err(|b| put32(b, 32, 2)), Error::Unsupported(m) if m.contains("LUKS")));
}

#[test]
fn l1_size_and_offset() {
    let fx = Fixture::new("", &[]);
    assert_corrupt_at(fx.err(|b| put32(b, 36, 0)), 36);
    assert_limit(fx.err(|b| put32(b, 36, u32::MAX)), "qcow2 l1_size");
    let len = fx.bytes.len() as u64;
    assert_corrupt_at(fx.err(|b| put64(b, 40, len.next_multiple_of(65536) + 65536)), 40);
    assert_corrupt_at(fx.err(|b| put64(b, 40, 65536 + 8)), 40);
}

#[test]
fn header_caps() {
    let fx = Fixture::new("", &[]);
    assert_limit(fx.err(|b| put32(b, 96, 7)), "qcow2 refcount_order");
    assert_limit(fx.err(|b| put32(b, 100, 8192)), "qcow2 header_length");
}

#[test]
fn incompatible_features() {
    let fx = Fixture::new("", &[]);
    let inc = be64(&fx.bytes, 72);
    match fx.err(|b| put64(b, 72, inc | 1)) {
        Error::Unsupported(m) => assert!(m.contains("qemu-img check -r all"), "{m}"),
        other => panic!("dirty: {other:?}"),
    }
    assert_corrupt_at(fx.err(|b| put64(b, 72, inc | 2)), 72);
    match fx.err(|b| put64(b, 72, inc | 1 << 9)) {
        Error::Unsupported(m) => assert!(m.contains("bit 9"), "{m}"),
        other => panic!("unknown bit: {other:?}"),
    }
    // External data file bit without the name extension.
    assert_corrupt_at(fx.err(|b| put64(b, 72, inc | 4)), 72);
}

#[test]
fn unknown_feature_is_named_from_the_feature_table() {
    let fx = Fixture::new("", &[]);
    // Find qemu's feature name table and relabel one entry as incompatible bit 9.
    let mut b = fx.bytes.clone();
    let mut off = be32(&b, 100) as usize;
    let table = loop {
        let (kind, len) = (be32(&b, off), be32(&b, off + 4) as usize);
        assert_ne!(kind, 0, "qemu wrote no feature name table");
        if kind == 0x6803_f857 {
            break off + 8;
        }
        off += 8 + len.next_multiple_of(8);
    };
    b[table] = 0;
    b[table + 1] = 9;
    b[table + 2..table + 48].fill(0);
    b[table + 2..table + 14].copy_from_slice(b"teleporter 9");
    let inc = be64(&b, 72);
    put64(&mut b, 72, inc | 1 << 9);
    let e = open_err(&fx.write(&b), &OpenOptions::default());
    assert!(
        matches!(&e, Error::Unsupported(m) if m.contains("bit 9 (teleporter 9)")),
        "{e}"
    );
}

#[test]
fn l1_entries() {
    let fx = Fixture::new("", &[]);
    let l1 = fx.l1_offset();
    let past = (fx.bytes.len() as u64).next_multiple_of(65536) + (10 << 16);
    assert_corrupt_at(fx.err(|b| put64(b, l1, past | 1 << 63)), l1 as u64);
    let e0 = be64(&fx.bytes, l1);
    assert_corrupt_at(fx.err(|b| put64(b, l1, e0 | 1 << 60)), l1 as u64);
    assert_corrupt_at(fx.err(|b| put64(b, l1, e0 | 1 << 12)), l1 as u64);
}

#[test]
fn l2_entries() {
    let fx = Fixture::new("", &[]);
    let l2 = fx.l2_offset();
    let e0 = be64(&fx.bytes, l2);
    assert_ne!(e0, 0, "first cluster should be allocated");
    for bad in [e0 | 1 << 1, e0 | 1 << 57, e0 + 512, (1u64 << 55) | 1 << 63] {
        let src = fx.open_mutated(|b| put64(b, l2, bad)).unwrap();
        assert_corrupt_at(read_all(src.as_ref()).unwrap_err(), l2 as u64);
        assert_corrupt_at(src.map(0, src.size()).unwrap_err(), l2 as u64);
    }
}

#[test]
fn v2_zero_flag_is_reserved() {
    let fx = Fixture::new("compat=0.10", &[]);
    let l2 = fx.l2_offset();
    let e0 = be64(&fx.bytes, l2);
    let src = fx.open_mutated(|b| put64(b, l2, e0 | 1)).unwrap();
    assert_corrupt_at(read_all(src.as_ref()).unwrap_err(), l2 as u64);
}

/// Offset of the first compressed L2 entry of a compressed fixture.
fn first_compressed(fx: &Fixture) -> usize {
    let l2 = fx.l2_offset();
    (0..8192)
        .map(|i| l2 + 8 * i)
        .find(|&at| be64(&fx.bytes, at) & 1 << 62 != 0)
        .expect("no compressed cluster")
}

#[test]
fn compressed_descriptors() {
    for ct in ["zlib", "zstd"] {
        let fx = Fixture::new(&format!("compression_type={ct}"), &["-c"]);
        let at = first_compressed(&fx);
        let e = be64(&fx.bytes, at);
        // 64 KiB clusters: offset in bits 0-53.
        let past = (e & !((1u64 << 54) - 1)) | (fx.bytes.len() as u64 + 100);
        let src = fx.open_mutated(|b| put64(b, at, past)).unwrap();
        assert_corrupt_at(read_all(src.as_ref()).unwrap_err(), at as u64);
        // Garbage where the stream should be.
        let host = (e & ((1u64 << 54) - 1)) as usize;
        let src = fx.open_mutated(|b| b[host..host + 512].fill(0xff)).unwrap();
        assert!(
            matches!(read_all(src.as_ref()), Err(Error::Corrupt { .. })),
            "{ct}"
        );
    }
}

#[test]
fn extended_l2_bitmaps() {
    let fx = Fixture::new("extended_l2=on", &[]);
    let l2 = fx.l2_offset();
    let e0 = be64(&fx.bytes, l2);
    // Allocated and zero at once.
    let src = fx.open_mutated(|b| put64(b, l2 + 8, 0x1_0000_0001)).unwrap();
    assert_corrupt_at(read_all(src.as_ref()).unwrap_err(), l2 as u64);
    // Allocated subclusters in an unallocated cluster.
    let src = fx
        .open_mutated(|b| {
            put64(b, l2, 0);
            put64(b, l2 + 8, 1);
        })
        .unwrap();
    assert_corrupt_at(read_all(src.as_ref()).unwrap_err(), l2 as u64);
    // Bit 0 is reserved with extended entries.
    let src = fx.open_mutated(|b| put64(b, l2, e0 | 1)).unwrap();
    assert_corrupt_at(read_all(src.as_ref()).unwrap_err(), l2 as u64);
    // Extended L2 needs 16 KiB clusters.
    assert_corrupt_at(fx.err(|b| put32(b, 20, 13)), 20);
}

#[test]
fn backing_name_length() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("b.qcow2");
    let top = dir.path().join("t.qcow2");
    qemu_img(&["create", "-f", "qcow2", base.to_str().unwrap(), "1M"]);
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        "b.qcow2",
        "-F",
        "qcow2",
        top.to_str().unwrap(),
    ]);
    let mut b = std::fs::read(&top).unwrap();
    put32(&mut b, 16, 5000);
    std::fs::write(&top, &b).unwrap();
    assert_limit(
        open_err(&top, &OpenOptions::default()),
        "qcow2 backing file name length",
    );
}

/// Every truncation and a sweep of bit flips over the header and the first
/// table entries: errors are fine, panics and hangs are not.
#[test]
fn truncations_and_bit_flips_never_panic() {
    let fx = Fixture::new("cluster_size=4k,compression_type=zstd", &["-c"]);
    let b = &fx.bytes;
    for n in (0..b.len()).step_by(509).chain([0, 71, 72, 103, 104, 4095, 4096]) {
        exercise_bytes(Format::Qcow2, &b[..n.min(b.len())]);
    }
    let l1 = fx.l1_offset();
    let l2 = fx.l2_offset();
    let spots: Vec<usize> = (0..112).chain(l1..l1 + 16).chain(l2..l2 + 64).collect();
    for at in spots {
        for bit in 0..8 {
            let mut m = b.clone();
            m[at] ^= 1 << bit;
            exercise_bytes(Format::Qcow2, &m);
        }
    }
}
