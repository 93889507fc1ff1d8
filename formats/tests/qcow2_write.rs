//! qcow2 writer against the reference tool: every image written here must
//! pass `qemu-img check` with no errors or leaks and read back (through
//! qemu-img) as exactly the bytes that went in. qemu-img is required; a
//! missing qemu-img fails the tests rather than skipping them.

use rayon::prelude::*;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use v2x_formats::sink::{EncodedChunk, WriteSummary};
use v2x_formats::{create_writer, Compression, Error, OutputFormat, Preallocation, WriteOptions};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Small deterministic PRNG (xorshift64*), so test data needs no crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// Fills `buf` with runs of random bytes, zeros, one repeated byte and
/// compressible text, with run lengths of a few bytes up to ~300 KiB.
fn fill_mixed(rng: &mut Rng, buf: &mut [u8]) {
    let mut at = 0;
    while at < buf.len() {
        let len = (1 + rng.below(300 * KIB)) as usize;
        let end = (at + len).min(buf.len());
        let run = &mut buf[at..end];
        match rng.below(4) {
            0 => rng.fill(run),
            1 => run.fill(0),
            2 => run.fill(rng.below(256) as u8),
            _ => {
                let words: [&[u8]; 6] = [b"qcow2 ", b"cluster ", b"refcount ", b"v2x ", b"\n", b"L2 "];
                for (i, b) in run.iter_mut().enumerate() {
                    let w = words[(i / 7 + rng.below(2) as usize) % words.len()];
                    *b = w[i % w.len()];
                }
            }
        }
        at += len;
    }
}

/// A `size`-byte disk of mixed content from `seed`.
fn mixed_disk(size: u64, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    let mut data = vec![0u8; size as usize];
    fill_mixed(&mut rng, &mut data);
    data
}

fn opts(cluster_size: u64, compression: Option<Compression>) -> WriteOptions {
    WriteOptions {
        cluster_size: Some(cluster_size),
        compression,
        ..WriteOptions::default()
    }
}

/// Writes the given (offset, bytes) pieces of a `size`-byte disk the way the
/// copier does: chunks of up to 1 MiB (cluster aligned), all-zero chunks
/// skipped, encoded in parallel, written in order.
fn write_pieces(path: &Path, size: u64, pieces: &[(u64, &[u8])], opts: &WriteOptions) -> WriteSummary {
    let file = File::create(path).unwrap();
    let mut writer = create_writer(OutputFormat::Qcow2, file, size, opts).unwrap();
    let cs = writer.cluster_size();
    let chunk_len = MIB.max(cs);
    let mut jobs = Vec::new();
    for (base, bytes) in pieces {
        assert_eq!(base % cs, 0);
        let mut off = 0u64;
        while off < bytes.len() as u64 {
            let end = (off + chunk_len).min(bytes.len() as u64);
            let data = &bytes[off as usize..end as usize];
            if data.iter().any(|b| *b != 0) {
                jobs.push((base + off, data));
            }
            off = end;
        }
    }
    let encoder = writer.encoder();
    let chunks: Vec<EncodedChunk> = jobs
        .par_iter()
        .map(|(off, data)| encoder.encode(*off, data.to_vec()).unwrap())
        .collect();
    for chunk in chunks {
        writer.write_chunk(&chunk).unwrap();
    }
    writer.finish().unwrap()
}

fn write_disk(path: &Path, data: &[u8], opts: &WriteOptions) -> WriteSummary {
    write_pieces(path, data.len() as u64, &[(0, data)], opts)
}

/// Runs qemu-img, failing loudly if it is missing; returns (exit code, stdout).
fn qemu_img(args: &[&str]) -> (i32, String) {
    let out = Command::new("qemu-img").args(args).output().unwrap_or_else(|e| {
        panic!("qemu-img is required for the qcow2 writer tests (apt install qemu-utils): {e}")
    });
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{stdout}{}",
            if stderr.is_empty() {
                String::new()
            } else {
                format!("\nstderr: {stderr}")
            }
        ),
    )
}

/// `qemu-img check` reports no corruption, no leaks, no errors.
fn assert_check_clean(path: &Path) {
    let p = path.to_str().unwrap();
    let (code, out) = qemu_img(&["check", "-f", "qcow2", "--output=json", p]);
    assert_eq!(code, 0, "qemu-img check {p} failed:\n{out}");
    let json_end = out.rfind('}').map(|i| i + 1).unwrap_or(out.len());
    let v: serde_json::Value = serde_json::from_str(&out[..json_end]).unwrap();
    for key in ["check-errors", "leaks", "corruptions"] {
        assert_eq!(
            v.get(key).and_then(|x| x.as_u64()).unwrap_or(0),
            0,
            "{key} in:\n{out}"
        );
    }
}

/// qemu-img converts the image to raw bytes equal to `data` (then zeros up
/// to the virtual size).
fn assert_reads_back(path: &Path, data: &[u8], virtual_size: u64) {
    let raw = path.with_extension("raw");
    let (code, out) = qemu_img(&[
        "convert",
        "-f",
        "qcow2",
        "-O",
        "raw",
        path.to_str().unwrap(),
        raw.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "qemu-img convert failed:\n{out}");
    let back = std::fs::read(&raw).unwrap();
    std::fs::remove_file(&raw).unwrap();
    assert_eq!(back.len() as u64, virtual_size);
    assert!(
        back[..data.len()] == *data,
        "{} reads back differently",
        path.display()
    );
    assert!(back[data.len()..].iter().all(|b| *b == 0));
}

/// Header fields read from the first cluster of a written file.
struct Header {
    size: u64,
    cluster_bits: u32,
    reftable_clusters: u32,
    incompatible: u64,
    compression_type: u8,
}

fn header(path: &Path) -> Header {
    let mut h = [0u8; 112];
    File::open(path).unwrap().read_exact_at(&mut h, 0).unwrap();
    let be32 = |at: usize| u32::from_be_bytes(h[at..at + 4].try_into().unwrap());
    let be64 = |at: usize| u64::from_be_bytes(h[at..at + 8].try_into().unwrap());
    assert_eq!(be32(0), 0x5146_49fb);
    assert_eq!(be32(4), 3);
    assert_eq!(be32(96), 4, "refcount_order");
    Header {
        size: be64(24),
        cluster_bits: be32(20),
        reftable_clusters: be32(56),
        incompatible: be64(72),
        compression_type: h[104],
    }
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Writes `data` twice with `opts`, checks both copies are identical, clean
/// and read back exactly. Returns the summary and the file's path.
fn roundtrip(dir: &Path, name: &str, data: &[u8], opts: &WriteOptions) -> (WriteSummary, PathBuf) {
    let a = dir.join(format!("{name}.qcow2"));
    let b = dir.join(format!("{name}-again.qcow2"));
    let summary = write_disk(&a, data, opts);
    write_disk(&b, data, opts);
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
        "{name}: two writes differ"
    );
    std::fs::remove_file(&b).unwrap();
    let meta = std::fs::metadata(&a).unwrap();
    assert_eq!(summary.file_size, meta.len());
    // The writer preallocates blocks past the end in steps of tens of MiB;
    // none may be left behind the finished file.
    use std::os::unix::fs::MetadataExt;
    assert!(
        meta.blocks() * 512 <= meta.len() + MIB,
        "{name}: {} bytes allocated for a {}-byte file",
        meta.blocks() * 512,
        meta.len()
    );
    assert_eq!(summary.virtual_size, (data.len() as u64).next_multiple_of(512));
    assert_eq!(header(&a).size, summary.virtual_size);
    assert_check_clean(&a);
    assert_reads_back(&a, data, summary.virtual_size);
    (summary, a)
}

fn matrix(cluster_size: u64) {
    let dir = tmp();
    let data = mixed_disk(10 * MIB + 123, cluster_size);
    let mut sizes = Vec::new();
    for compression in [None, Some(Compression::Zlib), Some(Compression::Zstd)] {
        let name = format!("c{cluster_size}-{compression:?}");
        let (summary, path) = roundtrip(dir.path(), &name, &data, &opts(cluster_size, compression));
        let h = header(&path);
        assert_eq!(1u64 << h.cluster_bits, cluster_size);
        let zstd = compression == Some(Compression::Zstd);
        assert_eq!(h.incompatible, if zstd { 1 << 3 } else { 0 }, "{name}");
        assert_eq!(h.compression_type, u8::from(zstd), "{name}");
        assert!(summary.notes.iter().any(|n| n.contains("rounded up")));
        let nonzero: usize = data
            .chunks(cluster_size as usize)
            .filter(|c| c.iter().any(|b| *b != 0))
            .map(|c| c.len())
            .sum();
        assert_eq!(summary.data_bytes, nonzero as u64, "{name}");
        sizes.push(summary.file_size);
    }
    assert!(
        sizes[1] < sizes[0] && sizes[2] < sizes[0],
        "compression saved nothing: {sizes:?}"
    );
}

#[test]
fn clusters_512() {
    matrix(512);
}

#[test]
fn clusters_4k() {
    matrix(4096);
}

#[test]
fn clusters_64k() {
    matrix(64 * KIB);
}

#[test]
fn clusters_2m() {
    matrix(2 * MIB);
}

#[test]
fn default_options_give_64k_uncompressed() {
    let dir = tmp();
    let data = mixed_disk(3 * MIB, 7);
    let (_, path) = roundtrip(dir.path(), "default", &data, &WriteOptions::default());
    assert_eq!(header(&path).cluster_bits, 16);
}

#[test]
fn empty_and_tiny_disks() {
    let dir = tmp();
    for compression in [None, Some(Compression::Zstd)] {
        let (s, _) = roundtrip(
            dir.path(),
            &format!("empty-{compression:?}"),
            &[],
            &opts(65536, compression),
        );
        assert_eq!((s.virtual_size, s.data_bytes), (0, 0));
        let (s, _) = roundtrip(
            dir.path(),
            &format!("one-{compression:?}"),
            &[0xab],
            &opts(65536, compression),
        );
        assert_eq!(s.virtual_size, 512);
    }
    // All zeros: nothing but metadata is allocated.
    let (s, _) = roundtrip(
        dir.path(),
        "zeros",
        &vec![0u8; 5 * MIB as usize],
        &opts(65536, None),
    );
    assert_eq!(s.data_bytes, 0);
    assert!(s.file_size <= 4 * 65536, "{}", s.file_size);
}

/// 512-byte clusters: a refcount block covers 256 clusters (128 KiB of file)
/// and one refcount table cluster covers 64 blocks (8 MiB), so 12 MiB of
/// incompressible data needs ~100 streamed blocks and a two-cluster table.
#[test]
fn crosses_refcount_block_and_table_boundaries() {
    let dir = tmp();
    let mut data = vec![0u8; 12 * MIB as usize];
    Rng(99).fill(&mut data);
    let (s, path) = roundtrip(dir.path(), "refblocks", &data, &opts(512, None));
    assert!(s.file_size > 12 * MIB);
    assert!(header(&path).reftable_clusters >= 2);
}

/// A 4 GiB disk with 512-byte clusters: each L2 table maps 32 KiB, the L1
/// table is 1 MiB (spanning several refcount blocks by itself), and data
/// sits in pieces across many L2 and L1 clusters.
#[test]
fn sparse_disk_with_many_l2_tables() {
    let dir = tmp();
    let size = 4 * GIB + 1000;
    let mut rng = Rng(4242);
    let mut pieces_owned = Vec::new();
    let mut at = 0u64;
    while at < size - 200 * KIB {
        let len = 512 * (1 + rng.below(300));
        let mut bytes = vec![0u8; len as usize];
        fill_mixed(&mut rng, &mut bytes);
        pieces_owned.push((at, bytes));
        at += len + 512 * rng.below(1 << 19) + 60 * MIB;
    }
    // The partial sector at the very end.
    pieces_owned.push((size / 512 * 512, vec![0x5a; (size % 512) as usize]));
    let pieces: Vec<(u64, &[u8])> = pieces_owned.iter().map(|(o, b)| (*o, &b[..])).collect();

    let expected = dir.path().join("expected.raw");
    let raw = File::create(&expected).unwrap();
    raw.set_len(size).unwrap();
    for (o, b) in &pieces {
        raw.write_all_at(b, *o).unwrap();
    }
    for compression in [None, Some(Compression::Zlib)] {
        let out = dir.path().join(format!("sparse-{compression:?}.qcow2"));
        let s = write_pieces(&out, size, &pieces, &opts(512, compression));
        assert_eq!(s.virtual_size, size.next_multiple_of(512));
        assert_check_clean(&out);
        let (code, msg) = qemu_img(&[
            "compare",
            "-f",
            "raw",
            "-F",
            "qcow2",
            expected.to_str().unwrap(),
            out.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "qemu-img compare:\n{msg}");
    }
}

#[test]
fn rejects_bad_options() {
    let dir = tmp();
    let path = dir.path().join("bad.qcow2");
    let try_create = |o: &WriteOptions, size: u64| {
        create_writer(OutputFormat::Qcow2, File::create(&path).unwrap(), size, o).err()
    };
    for cs in [0, 256, 1000, 4 * MIB, 3 * 4096] {
        assert!(
            matches!(try_create(&opts(cs, None), MIB), Some(Error::Invalid(_))),
            "{cs}"
        );
    }
    let full = WriteOptions {
        preallocation: Preallocation::Full,
        ..WriteOptions::default()
    };
    assert!(matches!(try_create(&full, MIB), Some(Error::Unsupported(_))));
    let sub = WriteOptions {
        subformat: Some("dynamic".into()),
        ..WriteOptions::default()
    };
    assert!(matches!(try_create(&sub, MIB), Some(Error::Invalid(_))));
    let level_only = WriteOptions {
        compression_level: Some(3),
        ..WriteOptions::default()
    };
    assert!(matches!(try_create(&level_only, MIB), Some(Error::Invalid(_))));
    for (c, level) in [
        (Compression::Zlib, 0),
        (Compression::Zlib, 10),
        (Compression::Zstd, 23),
    ] {
        let o = WriteOptions {
            compression: Some(c),
            compression_level: Some(level),
            ..WriteOptions::default()
        };
        assert!(
            matches!(try_create(&o, MIB), Some(Error::Invalid(_))),
            "{c:?} {level}"
        );
    }
}

/// MAX_L1_BYTES (32 MiB, qemu's own limit): 512-byte clusters map at most
/// 4Mi * 32 KiB = 128 GiB.
#[test]
fn l1_table_cap() {
    let dir = tmp();
    let path = dir.path().join("cap.qcow2");
    let create = |size| {
        create_writer(
            OutputFormat::Qcow2,
            File::create(&path).unwrap(),
            size,
            &opts(512, None),
        )
    };
    assert!(create(128 * GIB).is_ok());
    match create(128 * GIB + 512) {
        Err(Error::LimitExceeded { what, .. }) => assert!(what.contains("L1")),
        other => panic!("expected LimitExceeded, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn rejects_chunks_out_of_order_or_misaligned() {
    let dir = tmp();
    let path = dir.path().join("order.qcow2");
    let mut w = create_writer(
        OutputFormat::Qcow2,
        File::create(&path).unwrap(),
        4 * MIB,
        &opts(65536, None),
    )
    .unwrap();
    let enc = w.encoder();
    w.write_chunk(&enc.encode(MIB, vec![1; MIB as usize]).unwrap())
        .unwrap();
    let back = w.write_chunk(&enc.encode(0, vec![1; 65536]).unwrap());
    assert!(matches!(back, Err(Error::Invalid(_))));
    let odd = w.write_chunk(&enc.encode(3 * MIB + 512, vec![1; 65536]).unwrap());
    assert!(matches!(odd, Err(Error::Invalid(_))));
    let short = w.write_chunk(&enc.encode(2 * MIB, vec![1; 1000]).unwrap());
    assert!(matches!(short, Err(Error::Invalid(_))));
    let past_end = w.write_chunk(&enc.encode(4 * MIB - 65536, vec![1; 2 * 65536]).unwrap());
    assert!(matches!(past_end, Err(Error::Invalid(_))));
}

/// qemu can keep using a written image: overwriting and discarding data
/// (including clusters packed together with others) leaves it clean, which
/// holds only if refcounts and COPIED flags are exactly right.
#[test]
fn qemu_can_modify_written_images() {
    let dir = tmp();
    let data = mixed_disk(6 * MIB, 31);
    for cs in [512, 64 * KIB] {
        for compression in [None, Some(Compression::Zlib), Some(Compression::Zstd)] {
            let path = dir.path().join(format!("modify-{cs}-{compression:?}.qcow2"));
            write_disk(&path, &data, &opts(cs, compression));
            let p = path.to_str().unwrap();
            let io = Command::new("qemu-io")
                .args(["-f", "qcow2"])
                .args(["-c", "write -P 0x55 0 1M"])
                .args(["-c", "write -P 0x66 3000k 700k"])
                .args(["-c", "discard 2M 1M"])
                .args(["-c", "write -z 5M 64k"])
                .arg(p)
                .output()
                .expect("qemu-io is required (apt install qemu-utils)");
            assert!(
                io.status.success(),
                "qemu-io: {}",
                String::from_utf8_lossy(&io.stderr)
            );
            assert_check_clean(&path);
        }
    }
}
