//! Dynamic VHD writer against qemu-img (the oracle) and our own reader.
//! A missing qemu-img or qemu-io fails these tests.

mod vhd_support;

use std::fs::File;
use std::path::Path;
use v2x_formats::output::{create_writer, OutputFormat};
use v2x_formats::sink::{Preallocation, WriteOptions, WriteSummary};
use v2x_formats::{open_image, Error, OpenOptions};
use vhd_support::run_tool;

const MIB: u64 = 1 << 20;
const BLOCK: u64 = 2 * MIB;

fn dynamic() -> WriteOptions {
    WriteOptions {
        subformat: Some("dynamic".into()),
        ..WriteOptions::default()
    }
}

/// Random-looking bytes, different for each `seed`.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Drives the writer as the copier does: chunks of `chunk` bytes (a multiple
/// of the cluster size) in order, all-zero chunks skipped, the last chunk
/// ending at the end of the disk.
fn write_disk(path: &Path, data: &[u8], chunk: u64) -> WriteSummary {
    let mut w = create_writer(
        OutputFormat::Vhd,
        File::create(path).unwrap(),
        data.len() as u64,
        &dynamic(),
    )
    .unwrap();
    assert_eq!(w.cluster_size(), BLOCK);
    assert_eq!(chunk % BLOCK, 0);
    let enc = w.encoder();
    for off in (0..data.len()).step_by(chunk as usize) {
        let piece = &data[off..(off + chunk as usize).min(data.len())];
        if piece.iter().all(|b| *b == 0) {
            continue;
        }
        let c = enc.encode(off as u64, piece.to_vec()).unwrap();
        w.write_chunk(&c).unwrap();
    }
    w.finish().unwrap()
}

fn json(out: &[u8]) -> serde_json::Value {
    serde_json::from_slice(out).unwrap()
}

/// Writes `data` twice and checks everything about the result; returns the
/// file. `blocks` is the number of blocks that must be allocated.
fn check(dir: &Path, name: &str, data: &[u8], blocks: u64) -> Vec<u8> {
    let size = data.len() as u64;
    let rounded = size.next_multiple_of(MIB);
    let path = dir.join(format!("{name}.vhd"));
    // Chunks of one block and of three blocks must give the same file.
    let summary = write_disk(&path, data, BLOCK);
    let again = dir.join(format!("{name}.again.vhd"));
    write_disk(&again, data, 3 * BLOCK);
    let bytes = std::fs::read(&path).unwrap();
    assert!(
        bytes == std::fs::read(&again).unwrap(),
        "{name}: output is not deterministic"
    );

    assert_eq!(summary.virtual_size, rounded, "{name}");
    assert_eq!(summary.file_size, bytes.len() as u64, "{name}");
    assert_eq!(
        summary.notes.len(),
        usize::from(rounded != size),
        "{name}: {:?}",
        summary.notes
    );
    let entries = rounded.div_ceil(BLOCK);
    let bat_len = (entries * 4).max(1).next_multiple_of(512);
    assert_eq!(
        bytes.len() as u64,
        512 + 1024 + bat_len + blocks * (BLOCK + 512) + 512,
        "{name}: {blocks} blocks allocated"
    );
    // Blocks holding a non-zero byte, and the guest bytes they cover.
    let nonzero: Vec<u64> = (0..entries)
        .filter(|k| {
            data.iter()
                .skip((k * BLOCK) as usize)
                .take(BLOCK as usize)
                .any(|b| *b != 0)
        })
        .collect();
    assert_eq!(nonzero.len() as u64, blocks, "{name}: test expectation");
    let stored: u64 = nonzero.iter().map(|k| (size - k * BLOCK).min(BLOCK)).sum();
    assert_eq!(summary.data_bytes, stored, "{name}");
    assert_eq!(
        bytes[..512],
        bytes[bytes.len() - 512..],
        "{name}: footer copy at 0"
    );
    assert_eq!(&bytes[512..520], b"cxsparse");

    let mut want = data.to_vec();
    want.resize(rounded as usize, 0);

    // qemu-img: format, size (from current_size, not CHS) and contents.
    let p = path.to_str().unwrap();
    let info = json(&run_tool("qemu-img", &["info", "--output=json", p]));
    assert_eq!(info["format"], "vpc", "{name}: {info}");
    assert_eq!(info["virtual-size"], rounded, "{name}: {info}");
    // qemu-img 10 names no vpc subformat; a cluster size (the block size)
    // is what sets a dynamic disk apart from a fixed one in its output.
    assert_eq!(info["cluster-size"], BLOCK, "{name}: {info}");
    let raw = dir.join(format!("{name}.qemu.raw"));
    run_tool(
        "qemu-img",
        &["convert", "-f", "vpc", "-O", "raw", p, raw.to_str().unwrap()],
    );
    let got = std::fs::read(&raw).unwrap();
    assert_eq!(got.len(), want.len(), "{name}: qemu's size");
    assert!(got == want, "{name}: qemu reads different bytes");
    // qemu's allocation map: exactly the blocks we wrote hold data.
    let map = json(&run_tool("qemu-img", &["map", "--output=json", "-f", "vpc", p]));
    let mapped: u64 = map
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["data"] == true)
        .map(|e| e["length"].as_u64().unwrap())
        .sum();
    let covered: u64 = nonzero.iter().map(|k| (rounded - k * BLOCK).min(BLOCK)).sum();
    assert_eq!(mapped, covered, "{name}: qemu's map of the allocated blocks");

    // Our reader.
    let src = open_image(&path, &OpenOptions::default()).unwrap();
    let i = src.info();
    assert_eq!(i.format, "vpc");
    assert_eq!(i.subformat.as_deref(), Some("dynamic"));
    assert!(i.notes.is_empty(), "{name}: {:?}", i.notes);
    assert_eq!(src.size(), rounded);
    let mut ours = vec![0xa5u8; want.len()];
    for (k, piece) in ours.chunks_mut(MIB as usize).enumerate() {
        src.read_at(k as u64 * MIB, piece).unwrap();
    }
    assert!(ours == want, "{name}: our reader reads different bytes");
    bytes
}

#[test]
fn empty_disk() {
    let dir = tempfile::tempdir().unwrap();
    check(dir.path(), "empty", &[], 0);
}

#[test]
fn tiny_disk_is_rounded_up() {
    let dir = tempfile::tempdir().unwrap();
    check(dir.path(), "tiny", &noise(1000, 1), 1);
    check(dir.path(), "tiny-zero", &[0; 1000], 0);
}

#[test]
fn size_not_a_whole_mib() {
    let dir = tempfile::tempdir().unwrap();
    // 5 MiB + 12345: rounded to 6 MiB, the last block ends inside the data.
    let mut d = noise((5 * MIB + 12345) as usize, 2);
    d[(BLOCK as usize)..(2 * BLOCK) as usize].fill(0);
    check(dir.path(), "odd", &d, 2);
    // 3 MiB + 512: rounded to 4 MiB, data only in the last partial block.
    let mut d = vec![0u8; (3 * MIB + 512) as usize];
    d[(3 * MIB + 100) as usize] = 7;
    check(dir.path(), "odd-tail", &d, 1);
}

#[test]
fn data_in_first_middle_and_last_blocks_around_a_zero_block() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = vec![0u8; (16 * MIB) as usize];
    let put = |d: &mut Vec<u8>, at: u64, bytes: &[u8]| {
        d[at as usize..at as usize + bytes.len()].copy_from_slice(bytes)
    };
    put(&mut d, 0, b"first sector");
    // Block 3 is full data, block 4 is zero between data, block 5 has data
    // only in its last 4 KiB, block 7 (the last) only in its last byte.
    put(&mut d, 3 * BLOCK, &noise(BLOCK as usize, 3));
    put(&mut d, 6 * BLOCK - 4096, &noise(4096, 4));
    // A block with a zero 4 KiB run in the middle, written in two runs.
    put(&mut d, 6 * BLOCK, &noise(8192, 5));
    put(&mut d, 6 * BLOCK + 3 * 4096, &noise(8192, 6));
    let end = d.len() as u64;
    put(&mut d, end - 1, &[0xee]);
    check(dir.path(), "spread", &d, 5);
}

#[test]
fn large_sparse_disk() {
    let dir = tempfile::tempdir().unwrap();
    let size = 300 * MIB + 7 * 512;
    let mut d = vec![0u8; size as usize];
    for (k, at) in [0, 77 * MIB + 4095, 150 * MIB, 299 * MIB + 1]
        .into_iter()
        .enumerate()
    {
        let n = noise(70_000, 10 + k as u64);
        d[at as usize..at as usize + n.len()].copy_from_slice(&n);
    }
    // The data at 0, 77 MiB, 150 MiB and 299 MiB fall into one block each.
    let bytes = check(dir.path(), "sparse", &d, 4);
    // 151 BAT entries (604 bytes) take two sectors, padded with 0xFF.
    let bat = &bytes[1536..1536 + 1024];
    assert!(bat[151 * 4..].iter().all(|b| *b == 0xff));
    let first = u32::from_be_bytes(bat[..4].try_into().unwrap());
    assert_eq!(u64::from(first) * 512, 1536 + 1024, "block 0 right after the BAT");
    assert!(bytes[2560..3072].iter().all(|b| *b == 0xff), "bitmap all set");
}

#[test]
fn qemu_can_write_into_our_output() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = noise((6 * MIB) as usize, 7);
    d[BLOCK as usize..2 * BLOCK as usize].fill(0);
    let path = dir.path().join("modify.vhd");
    write_disk(&path, &d, BLOCK);
    let p = path.to_str().unwrap();
    // One write into the unallocated block, one over allocated data.
    for cmd in ["write -P 0x5a 2359296 65536", "write -P 0x33 4096 512"] {
        run_tool("qemu-io", &["-f", "vpc", "-c", cmd, p]);
    }
    d[2359296..2359296 + 65536].fill(0x5a);
    d[4096..4608].fill(0x33);
    let raw = dir.path().join("modify.raw");
    run_tool(
        "qemu-img",
        &["convert", "-f", "vpc", "-O", "raw", p, raw.to_str().unwrap()],
    );
    assert!(std::fs::read(&raw).unwrap() == d, "qemu's writes read back");
    let src = open_image(&path, &OpenOptions::default()).unwrap();
    let mut ours = vec![0u8; d.len()];
    src.read_at(0, &mut ours).unwrap();
    assert!(ours == d, "our reader sees qemu's writes");
}

#[test]
fn options_and_bad_chunks_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let f = || File::create(dir.path().join("x.vhd")).unwrap();
    let with = |sub: &str| WriteOptions {
        subformat: Some(sub.into()),
        ..WriteOptions::default()
    };
    for sub in ["differencing", "streamOptimized"] {
        let e = create_writer(OutputFormat::Vhd, f(), MIB, &with(sub))
            .err()
            .unwrap();
        assert!(matches!(e, Error::Unsupported(_)), "{e}");
    }
    let prealloc = WriteOptions {
        preallocation: Preallocation::Full,
        ..dynamic()
    };
    assert!(create_writer(OutputFormat::Vhd, f(), MIB, &prealloc).is_err());
    let too_big = create_writer(
        OutputFormat::Vhd,
        f(),
        v2x_formats::vhd::MAX_WRITE_SIZE + 1,
        &dynamic(),
    );
    assert!(matches!(too_big.err().unwrap(), Error::Invalid(_)));

    let mut w = create_writer(OutputFormat::Vhd, f(), 8 * MIB, &dynamic()).unwrap();
    let enc = w.encoder();
    let block = |at: u64, len: u64| enc.encode(at, vec![1; len as usize]).unwrap();
    w.write_chunk(&block(BLOCK, BLOCK)).unwrap();
    for (what, c) in [
        ("backwards", block(0, BLOCK)),
        ("misaligned", block(2 * BLOCK + 512, BLOCK)),
        ("short", block(2 * BLOCK, 1000)),
        ("past the end", block(3 * BLOCK, 2 * BLOCK)),
    ] {
        let r = w.write_chunk(&c);
        assert!(matches!(r, Err(Error::Invalid(_))), "{what}: {r:?}");
    }
}
