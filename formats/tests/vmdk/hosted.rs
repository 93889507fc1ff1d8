//! Hosted disks: qemu-made images, damaged tables, header mutations, chains, extent policy, the real-world corpus.

use crate::util::*;
use std::path::{Path, PathBuf};
use v2x_formats::block::ExtentKind;
use v2x_formats::{open_image, BlockSource, Error, Format, OpenOptions};

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
    // qemu writes CIDs without leading zeros: overwrite the digits only.
    let len = img[at..].iter().position(|b| *b == b'\n').unwrap();
    let bad = if img[at] == b'1' { b'2' } else { b'1' };
    img[at..at + len].fill(bad);
    std::fs::write(&p, &img).unwrap();
    let src = open(&p);
    let notes = src.info().notes;
    assert!(notes.iter().any(|n| n.contains("parentCID")), "{notes:?}");
    assert!(src
        .info()
        .backing
        .unwrap()
        .details
        .iter()
        .any(|(k, _)| k == "cid"));

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
    // A FIFO next to the descriptor is refused instead of blocking the open.
    let fifo = d.join("sub/pipe.bin");
    let _ = std::fs::remove_file(&fifo);
    run("mkfifo", &[fifo.to_str().unwrap()]);
    let piped = d.join("sub/piped.vmdk");
    std::fs::write(
        &piped,
        "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\nRW 8 FLAT \"pipe.bin\" 0\n",
    )
    .unwrap();
    let e = err(open_image(&piped, &OpenOptions::default()));
    assert!(matches!(e, Error::Denied(_)), "{e}");
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
    const { assert!(v2x_formats::vmdk::MAX_GT_CACHE_BYTES <= 16 << 20) };
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

#[test]
fn info_reports_subformat_ddb_and_chain() {
    let dir = gen_dir();
    let detail = |i: &v2x_formats::ImageInfo, k: &str| {
        i.details.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone())
    };
    let i = open(&dir.join("monolithicSparse.vmdk")).info();
    assert_eq!(
        (i.format.as_str(), i.subformat.as_deref()),
        ("vmdk", Some("monolithicSparse"))
    );
    assert_eq!(i.cluster_size, Some(65536));
    assert_eq!(detail(&i, "ddb.adapterType").as_deref(), Some("ide"));
    assert_eq!(detail(&i, "extents").as_deref(), Some("1"));
    assert!(detail(&i, "cid").is_some() && i.notes.is_empty() && i.backing.is_none());

    let i = open(&dir.join("split.vmdk")).info();
    assert_eq!(i.subformat.as_deref(), Some("monolithicFlat"));
    assert_eq!(detail(&i, "extents").as_deref(), Some("4"));
    assert_eq!(detail(&i, "ddb.adapterType").as_deref(), Some("lsilogic"));
    assert_eq!(detail(&i, "cid").as_deref(), Some("12345678"));
    // Descriptor plus the four extent files.
    let files = [
        "split.vmdk",
        "split-a.bin",
        "split-b.bin",
        "split-c.vmdk",
        "split-d.bin",
    ];
    let total: u64 = files
        .iter()
        .map(|f| std::fs::metadata(dir.join(f)).unwrap().len())
        .sum();
    assert_eq!(i.file_size, Some(total));

    let i = open(&dir.join("streamOptimized.vmdk")).info();
    assert_eq!(detail(&i, "compression").as_deref(), Some("deflate"));

    let top = open(&dir.join("chain3.vmdk")).info();
    let mut depth = 0;
    let mut cur = &top;
    while let Some(b) = &cur.backing {
        assert_eq!(detail(cur, "parent cid"), detail(b, "cid"), "layer {depth}");
        cur = b;
        depth += 1;
    }
    assert_eq!(depth, 3);
    assert!(top
        .details
        .iter()
        .any(|(k, v)| k == "parent file name hint" && v == "chain2.vmdk"));
}
