//! VMDK reader and writer against qemu-img as the oracle.
//!
//! Images come from `testdata/gen-vmdk.sh` (run once per test process);
//! qemu-img and qemu-io must be installed: a missing tool fails the test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use v2x_formats::block::ExtentKind;
use v2x_formats::{open_image, BlockSource, Error, Format, OpenOptions};

/// Runs a tool and returns its stdout; panics loudly when it is missing or fails.
fn run(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool} is required for the VMDK tests and could not be run: {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The generated images, made once per test process.
fn gen_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("vmdk-gen-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/gen-vmdk.sh");
        run("sh", &[script.to_str().unwrap(), dir.to_str().unwrap()]);
        dir
    })
}

fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("vmdk-scratch-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// qemu-img's raw conversion of `img`, into a scratch file.
fn qemu_raw(img: &Path, tag: &str) -> PathBuf {
    let out = scratch(&format!("{tag}.raw"));
    run(
        "qemu-img",
        &[
            "convert",
            "-O",
            "raw",
            img.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    out
}

/// Compares every byte of `src` with the raw file `raw`, and checks the map:
/// bytes outside Data extents must be zero. Where both our map and the raw
/// file's holes say "zero", only a sample is read, so a 4 GiB sparse disk
/// stays fast.
fn assert_same_as_raw(src: &dyn BlockSource, raw: &Path, what: &str) {
    let raw_opts = OpenOptions {
        format: Some(Format::Raw),
        ..OpenOptions::default()
    };
    let theirs_src = open_image(raw, &raw_opts).unwrap();
    let size = theirs_src.size();
    assert_eq!(src.size(), size, "{what}: virtual size");
    let map = src.map(0, size).unwrap();
    assert_eq!(map.first().map(|e| e.start), Some(0).filter(|_| size > 0));
    assert_eq!(map.last().map(|e| e.end()).unwrap_or(0), size, "{what}: map end");
    for w in map.windows(2) {
        assert_eq!(w[0].end(), w[1].start, "{what}: map not contiguous");
    }
    if size <= 64 << 20 {
        // One read across every extent boundary at once, too.
        let whole = read_all(src);
        same(&whole, &read_all(theirs_src.as_ref()), what);
    }
    let raw_map = theirs_src.map(0, size).unwrap();
    let mut ours = vec![0u8; 1 << 20];
    let mut theirs = vec![0u8; 1 << 20];
    for e in &map {
        let mut pos = e.start;
        while pos < e.end() {
            let r = raw_map.iter().find(|r| r.start <= pos && pos < r.end()).unwrap();
            let n = (e.end().min(r.end()) - pos).min(1 << 20) as usize;
            if e.kind != ExtentKind::Data && r.kind != ExtentKind::Data {
                // Both say zero: sample ours and skip the rest of the run.
                let k = n.min(4096);
                src.read_at(pos, &mut ours[..k]).unwrap();
                assert!(
                    ours[..k].iter().all(|b| *b == 0),
                    "{what}: hole at {pos:#x} not zero"
                );
                pos = e.end().min(r.end());
                continue;
            }
            theirs_src.read_at(pos, &mut theirs[..n]).unwrap();
            if e.kind != ExtentKind::Data {
                assert!(
                    theirs[..n].iter().all(|b| *b == 0),
                    "{what}: map says {:?} at {pos:#x} but qemu reads data",
                    e.kind
                );
            }
            ours[..n].fill(0xee);
            src.read_at(pos, &mut ours[..n]).unwrap();
            if ours[..n] != theirs[..n] {
                let i = ours[..n]
                    .iter()
                    .zip(&theirs[..n])
                    .position(|(a, b)| a != b)
                    .unwrap();
                panic!("{what}: differs from qemu at {:#x}", pos + i as u64);
            }
            pos += n as u64;
        }
    }
}

fn open(p: &Path) -> Box<dyn BlockSource> {
    open_image(p, &OpenOptions::default()).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn generated_images_match_qemu() {
    let dir = gen_dir();
    let list = std::fs::read_to_string(dir.join("images.txt")).unwrap();
    for name in list.lines() {
        let img = dir.join(name);
        let raw = qemu_raw(&img, name);
        let src = open(&img);
        let t = std::time::Instant::now();
        assert_same_as_raw(src.as_ref(), &raw, name);
        eprintln!("{name}: compared in {:?}", t.elapsed());
        let _ = std::fs::remove_file(raw);
    }
}

/// Real-world images from `/work/shared/corpus` (not in the repository):
/// every VMDK row must hash like qemu-img's raw conversion, and hostile
/// (`afl*`) rows must fail cleanly within a second. Opt-in: `--ignored`.
#[test]
#[ignore = "needs /work/shared/corpus"]
fn corpus_vmdk_rows() {
    use sha2::{Digest, Sha256};
    let root = Path::new("/work/shared/corpus");
    let manifest = std::fs::read_to_string(root.join("MANIFEST.tsv")).expect("corpus manifest");
    let mut failures = Vec::new();
    for row in manifest.lines().skip(1) {
        let cols: Vec<&str> = row.split('\t').collect();
        let (file, want) = (cols[0], cols[11]);
        if !file.ends_with(".vmdk") || file.contains('!') {
            continue;
        }
        let path = root.join(file);
        let t = std::time::Instant::now();
        let hostile = file.rsplit('/').next().unwrap().starts_with("afl");
        let src = match open_image(&path, &OpenOptions::default()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{file}: open failed in {:?}: {e}", t.elapsed());
                if !hostile {
                    failures.push(format!("{file}: {e}"));
                }
                assert!(t.elapsed().as_secs() < 1, "{file} took too long to fail");
                continue;
            }
        };
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 4 << 20];
        let mut pos = 0;
        let mut err = None;
        while pos < src.size() {
            let n = (src.size() - pos).min(buf.len() as u64) as usize;
            if let Err(e) = src.read_at(pos, &mut buf[..n]) {
                err = Some(e);
                break;
            }
            h.update(&buf[..n]);
            pos += n as u64;
        }
        let got = format!("{:x}", h.finalize());
        let info = src.info();
        eprintln!(
            "{file}: {} in {:?} notes={:?} err={err:?}",
            if got == want { "OK" } else { "MISMATCH" },
            t.elapsed(),
            info.notes
        );
        if hostile {
            assert!(
                err.is_some() || t.elapsed().as_secs() < 1,
                "{file}: hostile image read"
            );
        } else if got != want || err.is_some() {
            failures.push(format!("{file}: got {got}, want {want}, err {err:?}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Copies `src` into a new streamOptimized VMDK at `out` the way the copier
/// does: chunks encoded in parallel, written in order.
fn write_vmdk(src: &dyn BlockSource, out: &Path) -> v2x_formats::sink::WriteSummary {
    use rayon::prelude::*;
    use v2x_formats::{create_writer, OutputFormat, WriteOptions};
    let file = std::fs::File::create(out).unwrap();
    let mut w = create_writer(OutputFormat::Vmdk, file, src.size(), &WriteOptions::default()).unwrap();
    let enc = w.encoder();
    let chunk = 4 * w.cluster_size();
    let offsets: Vec<u64> = (0..src.size().div_ceil(chunk)).map(|i| i * chunk).collect();
    for batch in offsets.chunks(16) {
        let encoded: Vec<_> = batch
            .par_iter()
            .map(|&off| {
                let n = (src.size() - off).min(chunk) as usize;
                let mut data = vec![0u8; n];
                src.read_at(off, &mut data).unwrap();
                enc.encode(off, data).unwrap()
            })
            .collect();
        for c in encoded {
            w.write_chunk(c).unwrap();
        }
    }
    w.finish().unwrap()
}

#[test]
fn writer_output_is_valid_deterministic_and_exact() {
    let dir = gen_dir();
    let src = open(&dir.join("monolithicSparse.vmdk"));
    let out = scratch("written.vmdk");
    let sum = write_vmdk(src.as_ref(), &out);
    assert_eq!(sum.virtual_size, src.size());
    run("qemu-img", &["check", out.to_str().unwrap()]);
    let info = run("qemu-img", &["info", out.to_str().unwrap()]);
    assert!(info.contains("streamOptimized"), "{info}");
    // qemu reads back the source's bytes; so do we.
    let raw = qemu_raw(&out, "written");
    assert_same_as_raw(src.as_ref(), &raw, "qemu reading our vmdk");
    let back = open(&out);
    assert_same_as_raw(back.as_ref(), &raw, "v2x reading our vmdk");
    assert!(back.info().notes.is_empty(), "{:?}", back.info().notes);
    // Same input, same bytes.
    let again = scratch("written-again.vmdk");
    write_vmdk(src.as_ref(), &again);
    assert!(
        std::fs::read(&out).unwrap() == std::fs::read(&again).unwrap(),
        "output not deterministic"
    );
}

#[test]
fn writer_handles_empty_and_odd_sized_disks() {
    let dir = gen_dir();
    // An all-zero disk stores no grains, only (empty) grain tables.
    let empty = scratch("empty.raw");
    std::fs::File::create(&empty).unwrap().set_len(3 << 20).unwrap();
    let src = open(&empty);
    let out = scratch("empty.vmdk");
    write_vmdk(src.as_ref(), &out);
    run("qemu-img", &["check", out.to_str().unwrap()]);
    assert!(std::fs::metadata(&out).unwrap().len() < 128 << 10);
    assert_same_as_raw(open(&out).as_ref(), &qemu_raw(&out, "empty-back"), "empty");
    // More than one grain table's worth (32 MiB) of sparse data.
    let big = scratch("two-tables.raw");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len((40 << 20) + 512).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(
        &std::fs::read(dir.join("pattern.raw")).unwrap()[..1 << 20],
        33 << 20,
    )
    .unwrap();
    f.write_all_at(b"tail", 40 << 20).unwrap();
    let src = open(&big);
    let out = scratch("two-tables.vmdk");
    write_vmdk(src.as_ref(), &out);
    run("qemu-img", &["check", out.to_str().unwrap()]);
    let raw = qemu_raw(&out, "two-tables-back");
    assert_same_as_raw(src.as_ref(), &raw, "two tables");
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// Writes `bytes` to a scratch file and opens it.
fn open_bytes(name: &str, bytes: &[u8]) -> v2x_formats::Result<Box<dyn BlockSource>> {
    let p = scratch(name);
    std::fs::write(&p, bytes).unwrap();
    open_image(&p, &OpenOptions::default())
}

/// The error of a result whose Ok side is not Debug.
fn err<T>(r: v2x_formats::Result<T>) -> Error {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

/// Asserts equal bytes, reporting the first difference instead of both buffers.
fn same(a: &[u8], b: &[u8], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: length");
    if let Some(i) = a.iter().zip(b).position(|(x, y)| x != y) {
        panic!("{what}: first difference at {i:#x}: {} vs {}", a[i], b[i]);
    }
}

fn read_all(src: &dyn BlockSource) -> Vec<u8> {
    let mut v = vec![0u8; src.size() as usize];
    src.read_at(0, &mut v).unwrap();
    v
}

#[test]
fn damaged_primary_grain_directory_falls_back_to_redundant() {
    use v2x_formats::vmdk::field;
    let dir = gen_dir();
    let orig = std::fs::read(dir.join("monolithicSparse.vmdk")).unwrap();
    let want = std::fs::read(qemu_raw(&dir.join("monolithicSparse.vmdk"), "gd-orig")).unwrap();
    let gd = u64_at(&orig, field::GD_OFFSET) as usize * 512;
    let rgd = u64_at(&orig, field::RGD_OFFSET) as usize * 512;
    assert!(gd != 0 && rgd != 0 && gd != rgd, "qemu writes a redundant GD");

    // Garbage in the primary directory.
    let mut img = orig.clone();
    img[gd..gd + 8].fill(0xff);
    let src = open_bytes("bad-gd.vmdk", &img).unwrap();
    same(&read_all(src.as_ref()), &want, "read");
    let notes = src.info().notes;
    assert!(notes.iter().any(|n| n.contains("redundant")), "{notes:?}");

    // Garbage in one primary grain table: that table's redundant copy is used.
    let mut img = orig.clone();
    let gt = u32::from_le_bytes(img[gd..gd + 4].try_into().unwrap()) as usize * 512;
    put_u32(&mut img, gt, 0x7fff_fff0);
    let src = open_bytes("bad-gt.vmdk", &img).unwrap();
    same(&read_all(src.as_ref()), &want, "read");
    let notes = src.info().notes;
    assert!(notes.iter().any(|n| n.contains("redundant copy")), "{notes:?}");

    // Both copies damaged: a clean Corrupt error.
    let mut img = orig.clone();
    img[gd..gd + 8].fill(0xff);
    img[rgd..rgd + 8].fill(0xff);
    let e = err(open_bytes("bad-both.vmdk", &img));
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
}

#[test]
fn header_mutations_give_exact_error_kinds() {
    use v2x_formats::vmdk::field;
    let orig = std::fs::read(gen_dir().join("monolithicSparse.vmdk")).unwrap();
    type Mutation = (&'static str, fn(&mut Vec<u8>), &'static str);
    let cases: &[Mutation] = &[
        ("version 9", |b| put_u32(b, field::VERSION, 9), "unsupported"),
        ("grain size 3", |b| put_u64(b, field::GRAIN_SIZE, 3), "corrupt"),
        (
            "grain size 512 MiB",
            |b| put_u64(b, field::GRAIN_SIZE, 1 << 20),
            "limit-exceeded",
        ),
        (
            "zero GTEs per GT",
            |b| put_u32(b, field::GTES_PER_GT, 0),
            "corrupt",
        ),
        (
            "2^20 GTEs per GT",
            |b| put_u32(b, field::GTES_PER_GT, 1 << 20),
            "limit-exceeded",
        ),
        (
            "capacity 2^60 sectors",
            |b| put_u64(b, field::CAPACITY, 1 << 60),
            "limit-exceeded",
        ),
        (
            "descriptor 1 GiB",
            |b| put_u64(b, field::DESCRIPTOR_SIZE, 1 << 21),
            "limit-exceeded",
        ),
        (
            "gd past end, no rgd",
            |b| {
                put_u64(b, field::GD_OFFSET, 1 << 40);
                put_u64(b, field::RGD_OFFSET, 0);
            },
            "corrupt",
        ),
        (
            "compressed with algorithm 9",
            |b| {
                put_u32(b, field::FLAGS, 0x10003);
                b[field::COMPRESS_ALGORITHM] = 9;
            },
            "unsupported",
        ),
        (
            "tiny grains: directory too large",
            |b| {
                put_u64(b, field::GRAIN_SIZE, 1);
                put_u32(b, field::GTES_PER_GT, 1);
                put_u64(b, field::CAPACITY, 1 << 34);
            },
            "limit-exceeded",
        ),
    ];
    for (what, mutate, kind) in cases {
        let mut img = orig.clone();
        mutate(&mut img);
        let t = std::time::Instant::now();
        match open_bytes("mutated.vmdk", &img) {
            Ok(_) => panic!("{what}: opened"),
            Err(e) => assert_eq!(e.kind_name(), *kind, "{what}: {e}"),
        }
        assert!(t.elapsed().as_millis() < 500, "{what}: slow");
    }
}

#[test]
fn stream_without_directory_is_indexed_by_scanning() {
    use v2x_formats::vmdk::field;
    let dir = gen_dir();
    let want = std::fs::read(dir.join("pattern.raw")).unwrap();
    // qemu's streamOptimized keeps its GD in the header area; drop it.
    let mut img = std::fs::read(dir.join("streamOptimized.vmdk")).unwrap();
    put_u64(&mut img, field::GD_OFFSET, 0);
    put_u64(&mut img, field::RGD_OFFSET, 0);
    let src = open_bytes("scan-qemu.vmdk", &img).unwrap();
    same(&read_all(src.as_ref()), &want, "read");
    let notes = src.info().notes;
    assert!(notes.iter().any(|n| n.contains("scanning")), "{notes:?}");

    // VMware layout without its footer: GD_AT_END, GT/GD markers, then EOS.
    let ours = scratch("scan-src.vmdk");
    write_vmdk(open(&dir.join("pattern.raw")).as_ref(), &ours);
    let mut img = std::fs::read(&ours).unwrap();
    img.truncate(img.len() - 3 * 512);
    img.extend_from_slice(&[0u8; 512]);
    let src = open_bytes("scan-nofooter.vmdk", &img).unwrap();
    same(&read_all(src.as_ref()), &want, "read");
    assert!(src.info().notes.iter().any(|n| n.contains("scanning")));
}

/// A synthetic stream: header (GD_AT_END, no footer), grains in the given
/// order (a later copy of a grain wins), then EOS.
fn synthetic_stream(grains: &[(u64, Vec<u8>)], capacity: u64) -> Vec<u8> {
    use std::io::Write;
    let h = v2x_formats::vmdk::SparseHeader {
        version: 3,
        flags: 0x30001,
        capacity: capacity / 512,
        grain_sectors: 8,
        descriptor_offset: 0,
        descriptor_size: 0,
        gtes_per_gt: 512,
        rgd_offset: 0,
        gd_offset: v2x_formats::vmdk::GD_AT_END,
        overhead: 1,
        compress_algorithm: 1,
    };
    let mut f = h.to_bytes().to_vec();
    for (lba, data) in grains {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        let c = e.finish().unwrap();
        f.extend_from_slice(&lba.to_le_bytes());
        f.extend_from_slice(&(c.len() as u32).to_le_bytes());
        f.extend_from_slice(&c);
        f.resize(f.len().next_multiple_of(512), 0);
    }
    f.extend_from_slice(&[0u8; 512]);
    f
}

#[test]
fn stream_with_out_of_order_and_duplicate_grains() {
    let g = |v: u8| vec![v; 4096];
    let img = synthetic_stream(&[(16, g(3)), (0, g(1)), (8, g(9)), (8, g(2))], 20 << 10);
    let src = open_bytes("ooo.vmdk", &img).unwrap();
    let got = read_all(src.as_ref());
    let mut want = [g(1), g(2), g(3)].concat();
    want.resize(20 << 10, 0);
    same(&got, &want, "ooo");
    let map = src.map(0, 20 << 10).unwrap();
    assert_eq!(map[0].kind, ExtentKind::Data);
    assert_eq!(map[0].len, 12 << 10);
    assert_eq!(map[1].kind, ExtentKind::Unallocated);

    // A grain that inflates past its size is corrupt, not a big allocation.
    let img = synthetic_stream(&[(0, vec![0u8; 1 << 20])], 20 << 10);
    let src = open_bytes("bomb.vmdk", &img).unwrap();
    let mut buf = vec![0u8; 4096];
    let e = src.read_at(0, &mut buf).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
}

/// Copies the chain into a fresh directory so tests can edit it.
fn chain_copy(tag: &str) -> PathBuf {
    let d = scratch(tag);
    std::fs::create_dir_all(&d).unwrap();
    for i in 0..4 {
        let n = format!("chain{i}.vmdk");
        std::fs::copy(gen_dir().join(&n), d.join(&n)).unwrap();
    }
    d
}

#[test]
fn chains_check_cid_depth_and_policy() {
    let d = chain_copy("cid");
    let p = d.join("chain1.vmdk");
    let mut img = std::fs::read(&p).unwrap();
    let at = img.windows(10).position(|w| w == b"parentCID=").unwrap() + 10;
    img[at..at + 8].copy_from_slice(b"0badc0de");
    std::fs::write(&p, &img).unwrap();
    let src = open(&p);
    let notes = src.info().notes;
    assert!(notes.iter().any(|n| n.contains("parentCID")), "{notes:?}");
    assert_eq!(
        src.info()
            .backing
            .unwrap()
            .details
            .iter()
            .find(|(k, _)| k == "cid")
            .is_some(),
        true
    );

    let top = gen_dir().join("chain3.vmdk");
    let shallow = OpenOptions {
        max_chain_depth: 2,
        ..OpenOptions::default()
    };
    let e = err(open_image(&top, &shallow));
    assert!(matches!(e, Error::LimitExceeded { .. }), "{e}");
    let refuse = OpenOptions {
        backing: v2x_formats::BackingPolicy::Refuse,
        ..OpenOptions::default()
    };
    let e = err(open_image(&top, &refuse));
    assert!(matches!(e, Error::Denied(_)), "{e}");
    // The map names the layer that answered.
    let map = open(&top).map(0, 5 << 20).unwrap();
    let layers: std::collections::BTreeSet<u32> = map.iter().map(|e| e.layer).collect();
    assert!(layers.len() >= 3, "{map:?}");
}

#[test]
fn extents_may_not_escape_the_descriptor_directory() {
    let d = scratch("escape");
    std::fs::create_dir_all(d.join("sub")).unwrap();
    std::fs::write(d.join("outside.bin"), vec![7u8; 4096]).unwrap();
    let desc = d.join("sub/disk.vmdk");
    std::fs::write(
        &desc,
        "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\nRW 8 FLAT \"../outside.bin\" 0\n",
    )
    .unwrap();
    let e = err(open_image(&desc, &OpenOptions::default()));
    assert!(matches!(e, Error::Denied(_)), "{e}");
    let any = OpenOptions {
        backing: v2x_formats::BackingPolicy::Any,
        ..OpenOptions::default()
    };
    let src = open_image(&desc, &any).unwrap();
    same(&read_all(src.as_ref()), &[7u8; 4096], "outside");
}

#[test]
fn zero_and_readonly_extents() {
    // qemu drops ZERO and RDONLY extents, so the expected bytes are spelled out.
    let d = scratch("zero-extents");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("a.bin"), vec![1u8; 1024]).unwrap();
    std::fs::write(d.join("b.bin"), [vec![9u8; 512], vec![2u8; 512]].concat()).unwrap();
    let desc = d.join("d.vmdk");
    std::fs::write(
        &desc,
        "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\
         RW 2 FLAT \"a.bin\" 0\nRW 3 ZERO\nRDONLY 1 FLAT \"b.bin\" 1\nNOACCESS 1 FLAT \"a.bin\"\n",
    )
    .unwrap();
    let src = open(&desc);
    let want = [vec![1u8; 1024], vec![0u8; 1536], vec![2u8; 512], vec![0u8; 512]].concat();
    same(&read_all(src.as_ref()), &want, "read");
    let map = src.map(0, want.len() as u64).unwrap();
    assert!(map
        .iter()
        .any(|e| e.kind == ExtentKind::Zero && e.start == 1024 && e.len >= 1536));
    assert!(src.info().notes.iter().any(|n| n.contains("NOACCESS")));
}

/// Builds a COWD (vmfsSparse) delta of `sectors` sectors with 4 KiB grains:
/// `grains` lists (grain index, content); content None writes a zero-grain entry.
fn cowd(sectors: u32, grains: &[(u32, Option<u8>)]) -> Vec<u8> {
    let gt_sectors = 4096 * 4 / 512;
    let gd_entries = (sectors / 8).div_ceil(4096);
    let mut f = vec![0u8; 512];
    f[0..4].copy_from_slice(b"COWD");
    put_u32(&mut f, 4, 1);
    put_u32(&mut f, 8, 3);
    put_u32(&mut f, 12, sectors);
    put_u32(&mut f, 16, 8);
    put_u32(&mut f, 20, 1);
    put_u32(&mut f, 24, gd_entries);
    let gt_at = 2u32;
    f.resize(512 * (gt_at + gt_sectors) as usize, 0);
    put_u32(&mut f, 512, gt_at);
    for (g, content) in grains {
        let entry = match content {
            None => 1,
            Some(v) => {
                let at = (f.len() / 512) as u32;
                f.extend_from_slice(&[*v; 4096]);
                at
            }
        };
        put_u32(&mut f, 512 * gt_at as usize + 4 * *g as usize, entry);
    }
    f
}

#[test]
fn vmfs_sparse_delta_over_vmfs_base() {
    let d = scratch("cowd");
    std::fs::create_dir_all(&d).unwrap();
    let base: Vec<u8> = (0..64u32 << 10).map(|i| (i / 4096) as u8 + 100).collect();
    std::fs::write(d.join("base-flat.vmdk"), &base).unwrap();
    std::fs::write(
        d.join("base.vmdk"),
        "# Disk DescriptorFile\nversion=1\nCID=aaaaaaaa\nparentCID=ffffffff\ncreateType=\"vmfs\"\n\
         RW 128 VMFS \"base-flat.vmdk\"\nddb.adapterType = \"lsilogic\"\n",
    )
    .unwrap();
    std::fs::write(
        d.join("snap-delta.vmdk"),
        cowd(128, &[(1, Some(0x11)), (3, None), (15, Some(0x22))]),
    )
    .unwrap();
    std::fs::write(
        d.join("snap.vmdk"),
        "# Disk DescriptorFile\nversion=1\nCID=bbbbbbbb\nparentCID=aaaaaaaa\ncreateType=\"vmfsSparse\"\n\
         parentFileNameHint=\"base.vmdk\"\nRW 128 VMFSSPARSE \"snap-delta.vmdk\"\n",
    )
    .unwrap();
    let src = open(&d.join("snap.vmdk"));
    let mut want = base.clone();
    want[4096..8192].fill(0x11);
    want[3 * 4096..4 * 4096].fill(0);
    want[15 * 4096..].fill(0x22);
    same(&read_all(src.as_ref()), &want, "read");
    let info = src.info();
    assert!(info.notes.is_empty(), "{:?}", info.notes);
    assert_eq!(info.subformat.as_deref(), Some("vmfsSparse"));
    let map = src.map(0, 64 << 10).unwrap();
    assert_eq!((map[0].layer, map[0].kind), (1, ExtentKind::Data));
    assert_eq!((map[1].start, map[1].layer), (4096, 0));
    assert!(map
        .iter()
        .any(|e| e.kind == ExtentKind::Zero && e.start == 3 * 4096));
}

#[test]
fn gt_cache_stays_bounded_and_reads_are_consistent_across_threads() {
    use rayon::prelude::*;
    let dir = gen_dir();
    let src = open(&dir.join("big-2gb.vmdk"));
    let raw = qemu_raw(&dir.join("big-2gb.vmdk"), "big-threads");
    let theirs = open_image(
        &raw,
        &OpenOptions {
            format: Some(Format::Raw),
            ..OpenOptions::default()
        },
    )
    .unwrap();
    // Many threads reading overlapping 1 MiB windows around the written data.
    (0..64u64).into_par_iter().for_each(|i| {
        let off = (2046 << 20) + i * (3 << 16);
        let mut a = vec![0u8; 1 << 20];
        let mut b = vec![0u8; 1 << 20];
        src.read_at(off, &mut a).unwrap();
        theirs.read_at(off, &mut b).unwrap();
        assert!(a == b, "window {off:#x}");
    });
    assert!(v2x_formats::vmdk::MAX_GT_CACHE_BYTES <= 16 << 20);
}

#[test]
fn fuzz_seeds_read_as_designed() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let g = |v: u8| vec![v; 4096];
    let src = open(&seeds.join("vmdk/tiny-sparse.vmdk"));
    let want = [g(0x41), g(0), g(0), g(0x42), vec![0; 4 * 4096]].concat();
    same(&read_all(src.as_ref()), &want, "read");
    let first: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let want = [first, g(b'B'), vec![0; 6 * 4096]].concat();
    for name in ["vmdk/tiny-stream.vmdk", "vmdk/tiny-stream-nofooter.vmdk"] {
        let src = open(&seeds.join(name));
        same(&read_all(src.as_ref()), &want, name);
    }
    let src = open(&seeds.join("vmdk_cowd/tiny.cowd"));
    let want = [g(b'C'), g(0), g(b'D'), vec![0; 5 * 4096]].concat();
    same(&read_all(src.as_ref()), &want, "read");
}

/// A deterministic mutation smoke test over the fuzz seeds and qemu's own
/// images: flip bytes and words in the metadata, open, map and read.
/// Nothing may panic or take long. `V2X_VMDK_MUTATIONS` raises the count.
#[test]
fn mutated_images_never_panic() {
    use v2x_formats::fuzzing::exercise_bytes;
    let n: u64 = std::env::var("V2X_VMDK_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let mut inputs: Vec<(Format, Vec<u8>)> = Vec::new();
    for (dir, format) in [("vmdk", Format::VmdkSparse), ("vmdk_cowd", Format::VmdkCowd)] {
        for e in std::fs::read_dir(seeds.join(dir)).unwrap() {
            inputs.push((format, std::fs::read(e.unwrap().path()).unwrap()));
        }
    }
    for name in ["streamOptimized.vmdk", "monolithicSparse.vmdk"] {
        let mut b = std::fs::read(gen_dir().join(name)).unwrap();
        b.truncate(256 << 10);
        inputs.push((Format::VmdkSparse, b));
    }
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..n {
        let (format, base) = &inputs[(i % inputs.len() as u64) as usize];
        let mut b = base.clone();
        for _ in 0..1 + rnd() % 4 {
            // Mostly the first sectors (header, descriptor, tables), sometimes anywhere.
            let span = if rnd() % 4 == 0 {
                b.len()
            } else {
                b.len().min(8192)
            };
            let at = (rnd() % span as u64) as usize;
            match rnd() % 4 {
                0 => b[at] ^= 1 << (rnd() % 8),
                1 => b[at] = 0xff,
                2 if at + 4 <= b.len() => b[at..at + 4].copy_from_slice(&(rnd() as u32).to_le_bytes()),
                _ => b.truncate(at.max(1)),
            }
        }
        let t = std::time::Instant::now();
        exercise_bytes(*format, &b);
        assert!(t.elapsed().as_secs() < 2, "mutation {i} took {:?}", t.elapsed());
    }
}

/// Measures read throughput of `V2X_VMDK_BENCH` (an image path) with 8
/// threads issuing 1 MiB reads, and of writing it back as streamOptimized.
/// Opt-in: `--ignored`.
#[test]
#[ignore = "benchmark; set V2X_VMDK_BENCH=/path/to/image"]
fn read_throughput() {
    use rayon::prelude::*;
    let path = PathBuf::from(std::env::var("V2X_VMDK_BENCH").expect("V2X_VMDK_BENCH"));
    let src = open(&path);
    let size = src.size();
    let t = std::time::Instant::now();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(8).build().unwrap();
    pool.install(|| {
        (0..size.div_ceil(1 << 20)).into_par_iter().for_each(|i| {
            let off = i << 20;
            let mut buf = vec![0u8; (size - off).min(1 << 20) as usize];
            src.read_at(off, &mut buf).unwrap();
        })
    });
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "read {} MiB in {secs:.2}s: {:.0} MiB/s",
        size >> 20,
        (size >> 20) as f64 / secs
    );
    let out = scratch("bench-out.vmdk");
    let t = std::time::Instant::now();
    pool.install(|| write_vmdk(src.as_ref(), &out));
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "wrote streamOptimized in {secs:.2}s: {:.0} MiB/s",
        (size >> 20) as f64 / secs
    );
    let _ = std::fs::remove_file(out);
}

/// Builds an seSparse delta of 128 sectors (16 grains of 4 KiB): grains
/// 0, 5 and 15 hold 0x5e, 0x55 and 0x1f; grain 2 is a zero grain and grain 3
/// an unmapped one; the rest fall through to the parent.
fn sesparse() -> Vec<u8> {
    use v2x_formats::vmdk::se_field as f;
    let mut b = vec![0u8; 512 * 67];
    put_u64(&mut b, 0, v2x_formats::vmdk::SESPARSE_MAGIC);
    put_u64(&mut b, f::VERSION, 0x2_0000_0001);
    put_u64(&mut b, f::CAPACITY, 128);
    put_u64(&mut b, f::GRAIN_SIZE, 8);
    put_u64(&mut b, f::GT_SIZE, 64);
    put_u64(&mut b, f::VOLATILE_OFFSET, 1);
    put_u64(&mut b, f::VOLATILE_OFFSET + 8, 1);
    put_u64(&mut b, f::GD_OFFSET, 2);
    put_u64(&mut b, f::GD_SIZE, 1);
    put_u64(&mut b, f::GT_OFFSET, 3);
    put_u64(&mut b, f::GT_AREA_SIZE, 64);
    put_u64(&mut b, f::GRAINS_OFFSET, 67);
    put_u64(&mut b, f::GRAINS_OFFSET + 8, 24);
    put_u64(&mut b, 512, 0xcafe_cafe);
    put_u64(&mut b, 1024, 0x1000_0000_0000_0000);
    let gt = 3 * 512;
    let alloc = |i: u64| 0x3000_0000_0000_0000u64 | (i << 48);
    put_u64(&mut b, gt, alloc(0));
    put_u64(&mut b, gt + 2 * 8, 0x2000_0000_0000_0000);
    put_u64(&mut b, gt + 3 * 8, 0x1000_0000_0000_0000);
    put_u64(&mut b, gt + 5 * 8, alloc(1));
    put_u64(&mut b, gt + 15 * 8, alloc(2));
    for v in [0x5e, 0x55, 0x1f] {
        b.extend_from_slice(&[v; 4096]);
    }
    b
}

#[test]
fn sesparse_delta_matches_qemu() {
    let d = scratch("sesparse");
    std::fs::create_dir_all(&d).unwrap();
    let base: Vec<u8> = (0..64u32 << 10).map(|i| (i / 512) as u8).collect();
    std::fs::write(d.join("base-flat.vmdk"), &base).unwrap();
    std::fs::write(
        d.join("base.vmdk"),
        "# Disk DescriptorFile\nversion=1\nCID=aaaaaaaa\nparentCID=ffffffff\ncreateType=\"vmfs\"\n\
         RW 128 VMFS \"base-flat.vmdk\"\n",
    )
    .unwrap();
    std::fs::write(d.join("snap-sesparse.vmdk"), sesparse()).unwrap();
    let snap = d.join("snap.vmdk");
    std::fs::write(
        &snap,
        "# Disk DescriptorFile\nversion=1\nCID=bbbbbbbb\nparentCID=aaaaaaaa\ncreateType=\"seSparse\"\n\
         parentFileNameHint=\"base.vmdk\"\nRW 128 SESPARSE \"snap-sesparse.vmdk\"\n",
    )
    .unwrap();
    let src = open(&snap);
    let raw = qemu_raw(&snap, "sesparse");
    assert_same_as_raw(src.as_ref(), &raw, "seSparse");
    let got = read_all(src.as_ref());
    assert!(got[..4096].iter().all(|b| *b == 0x5e) && got[2 * 4096..4 * 4096].iter().all(|b| *b == 0));
    assert_eq!(got[4096], base[4096]);
    assert!(got[5 * 4096..6 * 4096].iter().all(|b| *b == 0x55));
    assert!(got[15 * 4096..].iter().all(|b| *b == 0x1f));
    let map = src.map(0, 64 << 10).unwrap();
    assert!(map
        .iter()
        .any(|e| e.kind == ExtentKind::Zero && e.start == 2 * 4096 && e.len == 8192));

    // Header mutations.
    use v2x_formats::vmdk::se_field as f;
    let cases: &[(usize, u64, &str)] = &[
        (f::VERSION, 3, "unsupported"),
        (f::GRAIN_SIZE, 16, "unsupported"),
        (f::GD_SIZE, 1 << 40, "limit-exceeded"),
        (f::GD_OFFSET, 1 << 30, "corrupt"),
        (f::VOLATILE_OFFSET, 5, "corrupt"),
    ];
    for (off, v, kind) in cases {
        let mut b = sesparse();
        put_u64(&mut b, *off, *v);
        std::fs::write(d.join("snap-sesparse.vmdk"), &b).unwrap();
        let e = err(open_image(&snap, &OpenOptions::default()));
        assert_eq!(e.kind_name(), *kind, "field {off}: {e}");
    }
    // A pending journal replay is refused, and a bad table entry is corrupt.
    let mut b = sesparse();
    put_u64(&mut b, 512 + 24, 1);
    std::fs::write(d.join("snap-sesparse.vmdk"), &b).unwrap();
    assert_eq!(
        err(open_image(&snap, &OpenOptions::default())).kind_name(),
        "unsupported"
    );
    let mut b = sesparse();
    put_u64(&mut b, 3 * 512 + 8, 0x3fff_ffff_ffff_ffff);
    std::fs::write(d.join("snap-sesparse.vmdk"), &b).unwrap();
    let src = open(&snap);
    let e = src.read_at(4096, &mut [0u8; 512]).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
}
