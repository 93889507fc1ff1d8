//! VHD reader tests: qemu-img generated images against qemu-img's raw
//! output, hand-built dynamic and differencing disks, and mutations of
//! documented fields with the exact error kind they must cause.

mod vhd_support;

use std::path::Path;
use v2x_formats::error::Error;
use v2x_formats::file::HostFile;
use v2x_formats::open::{OpenOptions, Opener};
use v2x_formats::vhd::{self, dyn_off, footer_off};
use v2x_formats::{BlockSource, ExtentKind, Format};
use vhd_support::{assert_same_as_raw, generate, open, qemu_raw};

#[test]
fn generated_images_read_like_qemu() {
    let dir = generate();
    for name in ["vpc-dynamic.vhd", "vpc-fixed.vhd", "vpc-dynamic-chs.vhd"] {
        let img = dir.path().join(name);
        let raw = qemu_raw(&img, "vpc", dir.path());
        let src = open(&img);
        assert_eq!(src.info().format, "vpc");
        assert_same_as_raw(src.as_ref(), &raw);
        vhd_support::assert_parallel_reads(src.as_ref(), &raw);
    }
    // The fixed disk is detected by its footer although qemu calls it raw.
    let fixed = open(&dir.path().join("vpc-fixed.vhd"));
    assert_eq!(fixed.info().subformat.as_deref(), Some("fixed"));
    assert_eq!(fixed.size(), 40 << 20);
}

fn open_bytes(name: &str, bytes: Vec<u8>) -> v2x_formats::Result<Box<dyn BlockSource>> {
    let opener = Opener::new(Path::new(name), &OpenOptions::default())?;
    opener.open_file(HostFile::from_bytes(name, bytes), Some(Format::Vhd), 0)
}

fn be32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_be_bytes());
}

fn be64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_be_bytes());
}

fn checksum(b: &[u8], skip: usize) -> u32 {
    let sum = b
        .iter()
        .enumerate()
        .filter(|(i, _)| !(skip..skip + 4).contains(i))
        .fold(0u32, |a, (_, x)| a.wrapping_add(u32::from(*x)));
    !sum
}

/// Sets footer field `off` in both footer copies, keeping checksums valid.
fn set_footer(img: &mut [u8], off: usize, v: &[u8]) {
    let tail = img.len() - 512;
    for at in [0, tail] {
        if &img[at..at + 8] == b"conectix" {
            img[at + off..at + off + v.len()].copy_from_slice(v);
            let c = checksum(&img[at..at + 512], 64);
            be32(img, at + 64, c);
        }
    }
}

/// Sets dynamic header field `off` (header at 512), keeping its checksum valid.
fn set_dyn(img: &mut [u8], off: usize, v: &[u8]) {
    img[512 + off..512 + off + v.len()].copy_from_slice(v);
    let c = checksum(&img[512..1536], dyn_off::CHECKSUM);
    be32(img, 512 + dyn_off::CHECKSUM, c);
}

/// A hand-built dynamic (or, with `parent`, differencing) VHD.
struct Builder {
    size: u64,
    block: u64,
    /// (block number, sector bitmap, data of the whole block)
    blocks: Vec<(u32, Vec<u8>, Vec<u8>)>,
    /// (parent unique id, W2ru locator path)
    parent: Option<([u8; 16], String)>,
}

impl Builder {
    fn bitmap_len(&self) -> usize {
        ((self.block / 512).div_ceil(8) as usize).next_multiple_of(512)
    }

    fn build(&self) -> Vec<u8> {
        let entries = self.size.div_ceil(self.block) as usize;
        let bat_at = 1536usize;
        let bat_len = (entries * 4).next_multiple_of(512);
        let loc_at = bat_at + bat_len;
        let loc: Vec<u8> = self
            .parent
            .as_ref()
            .map(|(_, p)| p.encode_utf16().flat_map(|u| u.to_le_bytes()).collect())
            .unwrap_or_default();
        let mut out = vec![0u8; loc_at + loc.len().next_multiple_of(512)];
        out[loc_at..loc_at + loc.len()].copy_from_slice(&loc);
        let mut bat = vec![0xffu8; entries * 4];
        for (n, bitmap, data) in &self.blocks {
            let sector = (out.len() / 512) as u32;
            be32(&mut bat, *n as usize * 4, sector);
            let mut bm = bitmap.clone();
            bm.resize(self.bitmap_len(), 0);
            out.extend_from_slice(&bm);
            out.extend_from_slice(data);
        }
        out[bat_at..bat_at + bat.len()].copy_from_slice(&bat);
        // Dynamic header at 512.
        let h = &mut out[512..1536];
        h[..8].copy_from_slice(b"cxsparse");
        be64(h, 8, u64::MAX);
        be64(h, dyn_off::TABLE_OFFSET, bat_at as u64);
        be32(h, 24, 0x0001_0000);
        be32(h, dyn_off::MAX_TABLE_ENTRIES, entries as u32);
        be32(h, dyn_off::BLOCK_SIZE, self.block as u32);
        if let Some((id, name)) = &self.parent {
            h[dyn_off::PARENT_UNIQUE_ID..dyn_off::PARENT_UNIQUE_ID + 16].copy_from_slice(id);
            for (i, u) in name.encode_utf16().take(255).enumerate() {
                h[dyn_off::PARENT_NAME + 2 * i..][..2].copy_from_slice(&u.to_be_bytes());
            }
            let l = dyn_off::LOCATORS;
            h[l..l + 4].copy_from_slice(b"W2ru");
            be32(h, l + 4, 512);
            be32(h, l + 8, loc.len() as u32);
            be64(h, l + 16, loc_at as u64);
        }
        let c = checksum(h, dyn_off::CHECKSUM);
        be32(h, dyn_off::CHECKSUM, c);
        // Footer, at 0 and at the end.
        let mut f = vec![0u8; 512];
        f[..8].copy_from_slice(b"conectix");
        be32(&mut f, 8, 2);
        be32(&mut f, 12, 0x0001_0000);
        be64(&mut f, footer_off::DATA_OFFSET, 512);
        f[28..32].copy_from_slice(b"v2xt");
        be64(&mut f, 40, self.size);
        be64(&mut f, footer_off::CURRENT_SIZE, self.size);
        be32(
            &mut f,
            footer_off::DISK_TYPE,
            if self.parent.is_some() { 4 } else { 3 },
        );
        f[footer_off::UNIQUE_ID..footer_off::UNIQUE_ID + 16].copy_from_slice(&[0x11; 16]);
        let c = checksum(&f, footer_off::CHECKSUM);
        be32(&mut f, footer_off::CHECKSUM, c);
        out[..512].copy_from_slice(&f);
        out.extend_from_slice(&f);
        out
    }
}

fn unique_id(path: &Path) -> [u8; 16] {
    let b = std::fs::read(path).unwrap();
    let t = b.len() - 512 + footer_off::UNIQUE_ID;
    b[t..t + 16].try_into().unwrap()
}

/// A differencing disk over the generated dynamic VHD: block 2 holds
/// sectors 0..8 and 100, everything else falls through to the parent.
fn differencing_fixture(dir: &Path) -> (Builder, Vec<u8>) {
    std::fs::copy(dir.join("vpc-dynamic.vhd"), dir.join("parent.vhd")).unwrap();
    let raw = qemu_raw(&dir.join("parent.vhd"), "vpc", dir);
    let mut want = std::fs::read(raw).unwrap();
    let block = 2u64 << 20;
    let mut bitmap = vec![0u8; 512];
    bitmap[0] = 0xff;
    bitmap[100 / 8] |= 0x80 >> (100 % 8);
    let data: Vec<u8> = (0..block).map(|i| (i % 251) as u8 | 1).collect();
    let base = 2 * block as usize;
    for s in (0..8).chain([100]) {
        let r = s * 512..(s + 1) * 512;
        want[base + r.start..base + r.end].copy_from_slice(&data[r]);
    }
    let b = Builder {
        size: want.len() as u64,
        block,
        blocks: vec![(2, bitmap, data)],
        parent: Some((unique_id(&dir.join("parent.vhd")), ".\\parent.vhd".into())),
    };
    (b, want)
}

#[test]
fn differencing_disk_reads_through_to_its_parent() {
    let dir = generate();
    let (b, want) = differencing_fixture(dir.path());
    let child = dir.path().join("child.vhd");
    std::fs::write(&child, b.build()).unwrap();
    let src = open(&child);
    assert_eq!(src.info().subformat.as_deref(), Some("differencing"));
    let raw = dir.path().join("want.raw");
    std::fs::write(&raw, &want).unwrap();
    assert_same_as_raw(src.as_ref(), &raw);
    let map = src.map(4 << 20, 2 << 20).unwrap();
    assert_eq!(map[0].kind, ExtentKind::Data);
    assert_eq!((map[0].len, map[0].layer), (4096, 0));
    assert!(map.iter().any(|e| e.layer == 1), "parent layer missing: {map:?}");
}

#[test]
fn differencing_disk_checks_the_parent_unique_id() {
    let dir = generate();
    let (mut b, _) = differencing_fixture(dir.path());
    b.parent.as_mut().unwrap().0 = [0x42; 16];
    let child = dir.path().join("child.vhd");
    std::fs::write(&child, b.build()).unwrap();
    let e = open_err(&child);
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("unique ID"), "{e}");
}

#[test]
fn missing_parent_is_refused_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let b = Builder {
        size: 4 << 20,
        block: 2 << 20,
        blocks: vec![],
        parent: Some(([7; 16], "C:\\VMs\\gone-parent.vhd".into())),
    };
    let child = dir.path().join("child.vhd");
    std::fs::write(&child, b.build()).unwrap();
    let e = open_err(&child);
    assert!(matches!(e, Error::Io { .. }), "{e}");
    let looked = dir.path().join("gone-parent.vhd");
    assert!(
        e.to_string().contains(&looked.display().to_string()),
        "error must name {}: {e}",
        looked.display()
    );
}

#[test]
fn dynamic_bitmap_decides_data_and_zero() {
    // 512-byte blocks: one sector each, bitmap bit 0 of each block.
    let n = vhd::MAX_CACHED_BITMAPS + 10;
    let blocks = (0..n as u32)
        .map(|i| {
            let bit = if i % 3 == 0 { 0 } else { 0x80 };
            (i, vec![bit], vec![(i % 250) as u8 + 1; 512])
        })
        .collect();
    let b = Builder {
        size: n as u64 * 512,
        block: 512,
        blocks,
        parent: None,
    };
    let src = open_bytes("many.vhd", b.build()).unwrap();
    // Reading more blocks than the bitmap cache holds, twice, stays correct.
    for _ in 0..2 {
        let mut buf = vec![0xeeu8; n * 512];
        src.read_at(0, &mut buf).unwrap();
        for (i, s) in buf.chunks(512).enumerate() {
            let want = if i % 3 == 0 { 0 } else { (i % 250) as u8 + 1 };
            assert!(s.iter().all(|x| *x == want), "sector {i}");
        }
    }
    let map = src.map(0, 3 * 512).unwrap();
    assert_eq!(map[0].kind, ExtentKind::Unallocated);
    assert_eq!(
        (map[1].kind, map[1].start, map[1].len),
        (ExtentKind::Data, 512, 1024)
    );
}

fn dynamic_bytes() -> Vec<u8> {
    Builder {
        size: 8 << 20,
        block: 2 << 20,
        blocks: vec![(1, vec![0xff; 512], vec![9; 2 << 20])],
        parent: None,
    }
    .build()
}

fn open_err(path: &Path) -> Error {
    match v2x_formats::open_image(path, &OpenOptions::default()) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(e) => e,
    }
}

fn err_of(bytes: Vec<u8>) -> Error {
    match open_bytes("mutant.vhd", bytes) {
        Ok(_) => panic!("mutant opened"),
        Err(e) => e,
    }
}

#[test]
fn footer_checksum_policy_prefers_a_valid_copy_then_warns() {
    let good = dynamic_bytes();
    let tail = good.len() - 512;
    // Bad tail checksum: the copy at 0 is used.
    let mut b = good.clone();
    b[tail + footer_off::CHECKSUM] ^= 1;
    let src = open_bytes("t.vhd", b).unwrap();
    assert!(src.info().notes[0].contains("offset 0"), "{:?}", src.info().notes);
    // Tail destroyed: the copy at 0 is used.
    let mut b = good.clone();
    b[tail..].fill(0);
    assert_eq!(open_bytes("t.vhd", b).unwrap().size(), 8 << 20);
    // Both checksums wrong (a tool edited the ID): read, with a warning.
    let mut b = good.clone();
    b[footer_off::UNIQUE_ID] ^= 1;
    b[tail + footer_off::UNIQUE_ID] ^= 1;
    let src = open_bytes("t.vhd", b).unwrap();
    assert!(src.info().notes[0].contains("checksum mismatch"));
    let mut buf = [0u8; 4];
    src.read_at(2 << 20, &mut buf).unwrap();
    assert_eq!(buf, [9; 4]);
    // No cookie anywhere.
    let mut b = good;
    b[0] = b'X';
    b[tail] = b'X';
    assert!(matches!(err_of(b), Error::Corrupt { .. }));
}

#[test]
fn mutated_fields_fail_with_exact_kinds() {
    let good = dynamic_bytes();
    let corrupt = |e: Error| matches!(e, Error::Corrupt { .. });
    let limit = |e: &Error, w: &str| matches!(e, Error::LimitExceeded { what, .. } if *what == w);

    let mut b = good.clone();
    set_footer(&mut b, footer_off::DISK_TYPE, &9u32.to_be_bytes());
    assert!(corrupt(err_of(b)));

    let mut b = good.clone();
    set_footer(
        &mut b,
        footer_off::CURRENT_SIZE,
        &(vhd::MAX_DISK_SIZE + 1).to_be_bytes(),
    );
    assert!(limit(&err_of(b), "VHD disk size"));

    let mut b = good.clone();
    set_footer(&mut b, footer_off::DATA_OFFSET, &u64::MAX.to_be_bytes());
    assert!(corrupt(err_of(b)));

    let mut b = good.clone();
    set_dyn(
        &mut b,
        dyn_off::MAX_TABLE_ENTRIES,
        &(vhd::MAX_BAT_ENTRIES as u32 + 1).to_be_bytes(),
    );
    assert!(limit(&err_of(b), "VHD BAT entries"));

    let mut b = good.clone();
    set_dyn(&mut b, dyn_off::MAX_TABLE_ENTRIES, &3u32.to_be_bytes());
    assert!(corrupt(err_of(b)), "BAT too small for the disk");

    let mut b = good.clone();
    set_dyn(
        &mut b,
        dyn_off::BLOCK_SIZE,
        &((vhd::MAX_BLOCK_SIZE as u32) * 2).to_be_bytes(),
    );
    assert!(limit(&err_of(b), "VHD block size"));

    let mut b = good.clone();
    set_dyn(&mut b, dyn_off::BLOCK_SIZE, &3000u32.to_be_bytes());
    assert!(corrupt(err_of(b)));

    let mut b = good.clone();
    let len = b.len() as u64;
    set_dyn(&mut b, dyn_off::TABLE_OFFSET, &len.to_be_bytes());
    assert!(corrupt(err_of(b)), "BAT past the end");

    let mut b = good.clone();
    let bat = 1536 + 4;
    b[bat..bat + 4].copy_from_slice(&0x00ff_0000u32.to_be_bytes());
    assert!(corrupt(err_of(b)), "BAT entry past the end");

    let mut b = good;
    b[512] = b'X';
    assert!(corrupt(err_of(b)), "dynamic header cookie");
}

#[test]
fn fixed_disk_larger_than_its_file_is_corrupt() {
    let mut f = vec![0u8; 512];
    f[..8].copy_from_slice(b"conectix");
    be64(&mut f, footer_off::DATA_OFFSET, u64::MAX);
    be64(&mut f, footer_off::CURRENT_SIZE, 4096);
    be32(&mut f, footer_off::DISK_TYPE, 2);
    let c = checksum(&f, 64);
    be32(&mut f, 64, c);
    let mut img = vec![3u8; 4096];
    img.extend_from_slice(&f);
    assert_eq!(open_bytes("f.vhd", img.clone()).unwrap().size(), 4096);
    // Old writers left out the footer's last (reserved) byte: 511 bytes.
    let short = img[..img.len() - 1].to_vec();
    let src = open_bytes("f511.vhd", short).unwrap();
    let mut b = [0u8; 2];
    src.read_at(4094, &mut b).unwrap();
    assert_eq!(b, [3, 3]);
    assert!(matches!(err_of(img[1024..].to_vec()), Error::Corrupt { .. }));
}

#[test]
fn parent_locator_length_is_capped() {
    let dir = tempfile::tempdir().unwrap();
    let b = Builder {
        size: 4 << 20,
        block: 2 << 20,
        blocks: vec![],
        parent: Some(([7; 16], "p.vhd".into())),
    };
    let mut bytes = b.build();
    let l = dyn_off::LOCATORS + 8;
    set_dyn(&mut bytes, l, &(vhd::MAX_LOCATOR_LEN as u32 + 1).to_be_bytes());
    let child = dir.path().join("child.vhd");
    std::fs::write(&child, bytes).unwrap();
    let e = open_err(&child);
    assert!(
        matches!(
            e,
            Error::LimitExceeded {
                what: "VHD parent locator length",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn fixed_writer_output_reads_back_and_qemu_agrees() {
    use v2x_formats::sink::{ImageWriter, WriteOptions};
    let dir = generate();
    let raw = std::fs::read(dir.path().join("pattern.raw")).unwrap();
    // An odd size: the writer rounds it up to a whole MiB.
    let size = raw.len() as u64 - 3 * 512;
    let out = dir.path().join("out.vhd");
    let file = std::fs::File::create(&out).unwrap();
    let mut w: Box<dyn ImageWriter> =
        Box::new(vhd::VhdFixedWriter::create(file, size, &WriteOptions::default()).unwrap());
    let enc = w.encoder();
    let step = 1 << 20;
    for off in (0..size).step_by(step) {
        let end = (off + step as u64).min(size);
        let chunk = enc.encode(off, raw[off as usize..end as usize].to_vec()).unwrap();
        w.write_chunk(&chunk).unwrap();
    }
    let summary = w.finish().unwrap();
    assert_eq!(summary.virtual_size, 40 << 20);
    assert_eq!(summary.notes.len(), 1, "rounding is reported");
    let mut want = raw[..size as usize].to_vec();
    want.resize(40 << 20, 0);
    let want_path = dir.path().join("want.raw");
    std::fs::write(&want_path, &want).unwrap();
    let src = open(&out);
    assert_eq!(src.info().subformat.as_deref(), Some("fixed"));
    assert!(src.info().notes.is_empty(), "checksum must be valid");
    assert_same_as_raw(src.as_ref(), &want_path);
    let q = qemu_raw(&out, "vpc", dir.path());
    assert_eq!(std::fs::read(q).unwrap(), want, "qemu-img reads the same bytes");
}

#[test]
fn fixed_writer_refuses_disks_larger_than_the_format() {
    use v2x_formats::sink::WriteOptions;
    let dir = tempfile::tempdir().unwrap();
    let file = std::fs::File::create(dir.path().join("big.vhd")).unwrap();
    let e = vhd::VhdFixedWriter::create(file, vhd::MAX_WRITE_SIZE + 1, &WriteOptions::default()).unwrap_err();
    assert!(matches!(e, Error::Invalid(_)), "{e}");
}
