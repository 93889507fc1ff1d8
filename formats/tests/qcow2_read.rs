//! The qcow2 reader against qemu-img as the oracle: images made by qemu-img
//! and qemu-io, read back through `read_at` and `map` and compared with
//! `qemu-img convert -O raw` and `qemu-img map --output=json`.

mod common;

use common::*;
use std::path::Path;
use v2x_formats::block::{BlockSource, ExtentKind};
use v2x_formats::open::{open_image, BackingPolicy, OpenOptions};
use v2x_formats::Error;

/// Guest size used by most tests: not a multiple of any cluster size.
const SIZE: usize = (6 << 20) + 3 * 512;

fn info_detail(src: &dyn BlockSource, key: &str) -> Option<String> {
    src.info()
        .details
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

#[test]
fn v2_compat_0_10() {
    let dir = tempfile::tempdir().unwrap();
    let img = make_qcow2(dir.path(), "v2.qcow2", &pattern(SIZE), "compat=0.10", &[]);
    check_image(&img);
    let info = open(&img).info();
    assert_eq!(info.format, "qcow2");
    assert_eq!(info.subformat.as_deref(), Some("compat 0.10"));
    assert_eq!(info.cluster_size, Some(65536));
}

#[test]
fn v3_cluster_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(SIZE);
    for cs in ["512", "4k", "64k", "2M"] {
        let img = make_qcow2(
            dir.path(),
            &format!("c{cs}.qcow2"),
            &data,
            &format!("cluster_size={cs}"),
            &[],
        );
        check_image(&img);
        assert_eq!(open(&img).info().subformat.as_deref(), Some("compat 1.1"));
    }
}

#[test]
fn compressed_zlib_and_zstd() {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(SIZE);
    for (ct, cs) in [
        ("zlib", "64k"),
        ("zstd", "64k"),
        ("zlib", "4k"),
        ("zstd", "512"),
        ("zstd", "2M"),
    ] {
        let img = make_qcow2(
            dir.path(),
            &format!("{ct}-{cs}.qcow2"),
            &data,
            &format!("compression_type={ct},cluster_size={cs}"),
            &["-c"],
        );
        assert!(
            qemu_map(&img).iter().any(|e| e.compressed),
            "{ct}/{cs}: nothing compressed"
        );
        check_image(&img);
        let src = open(&img);
        assert_eq!(info_detail(src.as_ref(), "compression type").as_deref(), Some(ct));
    }
}

#[test]
fn v2_compressed() {
    let dir = tempfile::tempdir().unwrap();
    let img = make_qcow2(dir.path(), "v2c.qcow2", &pattern(SIZE), "compat=0.10", &["-c"]);
    assert!(qemu_map(&img).iter().any(|e| e.compressed));
    check_image(&img);
}

#[test]
fn zero_clusters_from_qemu_io() {
    let dir = tempfile::tempdir().unwrap();
    let img = make_qcow2(dir.path(), "z.qcow2", &pattern(SIZE), "", &[]);
    // Plain and preallocated zero clusters, one partial (which qemu writes as data).
    qemu_io(
        &img,
        &[
            "write -z 0 128k",
            "write -z -u 1M 192k",
            "write -z 2M 64k",
            "write -z 3000 1000",
        ],
    );
    check_image(&img);
    let src = open(&img);
    let m = src.map(0, 128 << 10).unwrap();
    assert!(m.iter().all(|e| e.kind == ExtentKind::Zero), "{m:?}");
}

#[test]
fn extended_l2_subclusters_over_a_backing_file() {
    let dir = tempfile::tempdir().unwrap();
    let base = make_qcow2(dir.path(), "base.qcow2", &pattern(4 << 20), "", &[]);
    let top = dir.path().join("top.qcow2");
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-o",
        "extended_l2=on,cluster_size=64k",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        top.to_str().unwrap(),
        "5M",
    ]);
    // Subclusters are 2 KiB: writes below, across and at cluster boundaries.
    qemu_io(
        &top,
        &[
            "write -P 0x11 2048 4096",
            "write -z 16384 2048",
            "write -P 0x22 63488 4096",
            "write -P 0x33 1M 64k",
            "write -z 2M 6144",
            "write -P 0x44 4194304 3000",
        ],
    );
    check_image(&top);
    let src = open(&top);
    assert_eq!(info_detail(src.as_ref(), "extended l2").as_deref(), Some("true"));
    let m = src.map(0, 65536).unwrap();
    assert!(
        m.iter()
            .any(|e| e.kind == ExtentKind::Data && e.layer == 0 && e.start == 2048 && e.len == 4096),
        "{m:?}"
    );
    assert!(
        m.iter().any(|e| e.kind == ExtentKind::Zero && e.start == 16384),
        "{m:?}"
    );
    assert!(m.iter().any(|e| e.layer == 1), "{m:?}");
    drop(base);
}

#[test]
fn extended_l2_compressed() {
    let dir = tempfile::tempdir().unwrap();
    let img = make_qcow2(
        dir.path(),
        "xc.qcow2",
        &pattern(SIZE),
        "extended_l2=on,cluster_size=32k",
        &["-c"],
    );
    assert!(qemu_map(&img).iter().any(|e| e.compressed));
    check_image(&img);
}

/// base (2 MiB) <- mid (4 MiB) <- top (6 MiB), distinct data in each layer.
fn chain_of_three(dir: &Path) -> std::path::PathBuf {
    let base = dir.join("base.qcow2");
    let mid = dir.join("mid.qcow2");
    let top = dir.join("top.qcow2");
    qemu_img(&["create", "-f", "qcow2", base.to_str().unwrap(), "2M"]);
    qemu_io(&base, &["write -P 0xb0 0 2M"]);
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        mid.to_str().unwrap(),
        "4M",
    ]);
    qemu_io(
        &mid,
        &[
            "write -P 0x31 512k 1M",
            "write -z 1792k 64k",
            "write -P 0x32 3M 64k",
        ],
    );
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        "mid.qcow2",
        "-F",
        "qcow2",
        top.to_str().unwrap(),
        "6M",
    ]);
    qemu_io(
        &top,
        &["write -P 0x7c 1M 1M", "write -z 64k 64k", "write -P 0x7d 5M 4k"],
    );
    top
}

#[test]
fn backing_chain_of_three() {
    let dir = tempfile::tempdir().unwrap();
    let top = chain_of_three(dir.path());
    check_image(&top);
    let src = open(&top);
    let info = src.info();
    assert_eq!(
        info_detail(src.as_ref(), "backing file").as_deref(),
        Some("mid.qcow2")
    );
    assert_eq!(
        info_detail(src.as_ref(), "backing file format").as_deref(),
        Some("qcow2")
    );
    let mid = info.backing.as_ref().unwrap();
    assert_eq!(mid.virtual_size, 4 << 20);
    assert_eq!(mid.backing.as_ref().unwrap().virtual_size, 2 << 20);
    let layers: std::collections::BTreeSet<u32> =
        src.map(0, 6 << 20).unwrap().iter().map(|e| e.layer).collect();
    assert_eq!(layers, [0, 1, 2].into_iter().collect());
    // Past the end of mid (4 MiB) and base (2 MiB): zeros, unallocated.
    let mut b = vec![1u8; 4096];
    src.read_at((4 << 20) + 8192, &mut b).unwrap();
    assert!(b.iter().all(|x| *x == 0));
    let m = src.map(4 << 20, 65536).unwrap();
    assert_eq!(m[0].kind, ExtentKind::Unallocated);
}

#[test]
fn raw_backing_file_declared_format() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.raw");
    // A raw backing file whose content looks like qcow2 must still be read as raw.
    let mut data = pattern(3 << 20);
    data[..4].copy_from_slice(b"QFI\xfb");
    std::fs::write(&base, &data).unwrap();
    let top = dir.path().join("top.qcow2");
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        "base.raw",
        "-F",
        "raw",
        top.to_str().unwrap(),
        "4M",
    ]);
    qemu_io(&top, &["write -P 0x66 1M 8k"]);
    check_image(&top);
}

#[test]
fn backing_outside_allowed_dirs_is_denied() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let base = other.path().join("base.qcow2");
    qemu_img(&["create", "-f", "qcow2", base.to_str().unwrap(), "1M"]);
    let top = dir.path().join("top.qcow2");
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        base.to_str().unwrap(),
        "-F",
        "qcow2",
        top.to_str().unwrap(),
    ]);
    let e = open_err(&top, &OpenOptions::default());
    assert!(matches!(e, Error::Denied(_)), "{e}");
    let refuse = OpenOptions {
        backing: BackingPolicy::Refuse,
        ..OpenOptions::default()
    };
    assert!(matches!(open_image(&top, &refuse), Err(Error::Denied(_))));
    check_image_with(&top, &opts_any());
}

fn check_image_with(path: &Path, opts: &OpenOptions) {
    let src = open_image(path, opts).unwrap();
    assert_reads_match(path, src.as_ref());
    assert_map_matches(path, src.as_ref());
}

#[test]
fn backing_loop_hits_the_depth_cap() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("loop.qcow2");
    qemu_img(&["create", "-f", "qcow2", img.to_str().unwrap(), "1M"]);
    // Point the image at itself (qemu-img refuses to make this, so patch the header).
    let mut b = std::fs::read(&img).unwrap();
    let name = b"loop.qcow2";
    let at = 0x1000usize;
    b[at..at + name.len()].copy_from_slice(name);
    b[8..16].copy_from_slice(&(at as u64).to_be_bytes());
    b[16..20].copy_from_slice(&(name.len() as u32).to_be_bytes());
    std::fs::write(&img, &b).unwrap();
    match open_err(&img, &OpenOptions::default()) {
        Error::LimitExceeded { what, .. } => assert_eq!(what, "backing chain depth"),
        other => panic!("expected the chain depth cap, got {other:?}"),
    }
}

#[test]
fn external_data_file_needs_permission() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("ext.qcow2");
    let data = dir.path().join("ext.data");
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-o",
        &format!("data_file={}", data.display()),
        img.to_str().unwrap(),
        "3M",
    ]);
    qemu_io(&img, &["write -P 0x5e 64k 128k", "write -P 0x5f 2M 4k"]);
    assert!(matches!(
        open_image(&img, &OpenOptions::default()),
        Err(Error::Denied(_))
    ));
    let allow = OpenOptions {
        allow_external_data: true,
        ..OpenOptions::default()
    };
    check_image_with(&img, &allow);
}

#[test]
fn internal_snapshots_are_noted_and_active_layer_read() {
    let dir = tempfile::tempdir().unwrap();
    let img = make_qcow2(dir.path(), "snap.qcow2", &pattern(2 << 20), "", &[]);
    qemu_img(&["snapshot", "-c", "before", img.to_str().unwrap()]);
    qemu_io(&img, &["write -P 0x99 0 64k"]);
    check_image(&img);
    let notes = open(&img).info().notes;
    assert!(
        notes.iter().any(|n| n.contains("1 internal snapshot")),
        "{notes:?}"
    );
}

#[test]
fn concurrent_reads_agree() {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(SIZE);
    let img = make_qcow2(dir.path(), "mt.qcow2", &data, "cluster_size=4k", &["-c"]);
    let src = open(&img);
    let want = qemu_raw(&img);
    std::thread::scope(|s| {
        for t in 0..4usize {
            let (src, want) = (&src, &want);
            s.spawn(move || {
                let mut buf = vec![0u8; 1 << 20];
                for i in (0..want.len().div_ceil(1 << 20)).map(|i| (i + t) % want.len().div_ceil(1 << 20)) {
                    let off = i << 20;
                    let n = (1 << 20).min(want.len() - off);
                    src.read_at(off as u64, &mut buf[..n]).unwrap();
                    assert!(buf[..n] == want[off..off + n], "thread {t} chunk {i}");
                }
            });
        }
    });
}

#[test]
fn empty_and_tiny_images() {
    let dir = tempfile::tempdir().unwrap();
    for size in ["0", "512", "1M"] {
        let img = dir.path().join(format!("e{size}.qcow2"));
        qemu_img(&["create", "-f", "qcow2", img.to_str().unwrap(), size]);
        let src = open(&img);
        assert_eq!(src.map(0, src.size()).unwrap().len(), usize::from(src.size() > 0));
        if src.size() > 0 {
            check_image(&img);
        }
    }
    let src = open(&dir.path().join("e1M.qcow2"));
    let mut b = [0u8; 2];
    assert!(matches!(
        src.read_at((1 << 20) - 1, &mut b),
        Err(Error::Invalid(_))
    ));
}

#[test]
fn huge_sparse_image_maps_cheaply() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("huge.qcow2");
    qemu_img(&["create", "-f", "qcow2", img.to_str().unwrap(), "64T"]);
    qemu_io(&img, &["write -P 0x42 40T 1M"]);
    let src = open(&img);
    let t = std::time::Instant::now();
    let m = src.map(0, src.size()).unwrap();
    assert!(t.elapsed().as_secs_f64() < 1.0, "map took {:?}", t.elapsed());
    assert_eq!(m.len(), 3, "{m:?}");
    assert_eq!(
        (m[1].start, m[1].len, m[1].kind),
        (40 << 40, 1 << 20, ExtentKind::Data)
    );
    let mut b = vec![0u8; 4096];
    src.read_at((40 << 40) + 4096, &mut b).unwrap();
    assert!(b.iter().all(|x| *x == 0x42));
}
