//! ESXi deltas: vmfsSparse (COWD) and seSparse.

use crate::util::*;

use v2x_formats::block::ExtentKind;
use v2x_formats::{open_image, Error, OpenOptions};

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
         parentFileNameHint=\"/vmfs/volumes/datastore1/vm/base.vmdk\"\n\
         RW 128 VMFSSPARSE \"snap-delta.vmdk\"\n",
    )
    .unwrap();
    let src = open(&d.join("snap.vmdk"));
    let mut want = base.clone();
    want[4096..8192].fill(0x11);
    want[3 * 4096..4 * 4096].fill(0);
    want[15 * 4096..].fill(0x22);
    same(&read_all(src.as_ref()), &want, "read");
    let info = src.info();
    // ESXi writes the parent's datastore path; the copy next to the delta is used.
    assert!(
        info.notes.len() == 1 && info.notes[0].contains("not on this host"),
        "{:?}",
        info.notes
    );
    assert_eq!(info.subformat.as_deref(), Some("vmfsSparse"));
    let map = src.map(0, 64 << 10).unwrap();
    assert_eq!((map[0].layer, map[0].kind), (1, ExtentKind::Data));
    assert_eq!((map[1].start, map[1].layer), (4096, 0));
    assert!(map
        .iter()
        .any(|e| e.kind == ExtentKind::Zero && e.start == 3 * 4096));
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

#[test]
fn sesparse_offsets_near_the_top_of_u64_are_corrupt_not_panics() {
    use v2x_formats::vmdk::se_field as f;
    let d = scratch("sesparse-overflow");
    std::fs::create_dir_all(&d).unwrap();
    let snap = d.join("snap.vmdk");
    std::fs::write(
        &snap,
        "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType=\"seSparse\"\n\
         RW 128 SESPARSE \"x-sesparse.vmdk\"\n",
    )
    .unwrap();
    for (off, v) in [
        (f::GT_OFFSET, (u64::MAX >> 9) - 1),
        (f::GRAINS_OFFSET, u64::MAX >> 9),
        (f::GT_AREA_SIZE, u64::MAX),
    ] {
        let mut b = sesparse();
        put_u64(&mut b, off, v);
        std::fs::write(d.join("x-sesparse.vmdk"), &b).unwrap();
        if let Ok(src) = open_image(&snap, &OpenOptions::default()) {
            let mut buf = vec![0u8; 64 << 10];
            let _ = src.read_at(0, &mut buf);
            let _ = src.map(0, 64 << 10);
        }
    }
}
