//! streamOptimized: exporter variants, the writer, fuzz seeds and mutation smoke.

use crate::util::*;
use std::path::Path;
use v2x_formats::block::ExtentKind;
use v2x_formats::{BlockSource, Error, Format};

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
    // A header naming no directory, or one past the end: the footer's is used.
    let mut bogus = img.clone();
    put_u64(&mut bogus, v2x_formats::vmdk::field::GD_OFFSET, 1 << 30);
    let src = open_bytes("bogus-header-gd.vmdk", &bogus).unwrap();
    same(&read_all(src.as_ref()), &want, "bogus header gd");
    assert!(src.info().notes.iter().any(|n| n.contains("footer")));
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

#[test]
fn large_sparse_output_maps_quickly() {
    use v2x_formats::{create_writer, OutputFormat, WriteOptions};
    // 64 GiB with one chunk of data: the copier skips holes, so the writer
    // sees a single chunk and must fill in 2048 (empty) grain tables.
    let size = 64u64 << 30;
    let out = scratch("large-sparse.vmdk");
    let file = std::fs::File::create(&out).unwrap();
    let mut w = create_writer(OutputFormat::Vmdk, file, size, &WriteOptions::default()).unwrap();
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i % 253) as u8).collect();
    let chunk = w.encoder().encode(40 << 30, data.clone()).unwrap();
    w.write_chunk(&chunk).unwrap();
    w.finish().unwrap();
    run("qemu-img", &["check", out.to_str().unwrap()]);
    let src = open(&out);
    let t = std::time::Instant::now();
    let map = src.map(0, size).unwrap();
    assert!(t.elapsed().as_millis() < 500, "map took {:?}", t.elapsed());
    assert_eq!(map.len(), 3, "{map:?}");
    assert_eq!(
        (map[1].start, map[1].len, map[1].kind),
        (40 << 30, 1 << 20, ExtentKind::Data)
    );
    let mut back = vec![0u8; 1 << 20];
    src.read_at(40 << 30, &mut back).unwrap();
    same(&back, &data, "large sparse");
    let qemu = run(
        "qemu-io",
        &[
            "-f",
            "vmdk",
            "-r",
            "-c",
            "read -P 0 40959M 1M",
            "-c",
            "read -v 40G 16",
            out.to_str().unwrap(),
        ],
    );
    assert!(!qemu.contains("fail") && qemu.contains("00 01 02 03"), "{qemu}");
}
