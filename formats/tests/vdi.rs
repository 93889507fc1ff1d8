//! VDI reader tests: qemu-img generated images against qemu-img's raw
//! output, and mutations of documented header fields.

mod vhd_support;

use std::path::Path;
use v2x_formats::error::Error;
use v2x_formats::file::HostFile;
use v2x_formats::open::{OpenOptions, Opener};
use v2x_formats::vdi::{self, off};
use v2x_formats::{BlockSource, ExtentKind, Format};
use vhd_support::{assert_same_as_raw, generate, open, qemu_raw};

#[test]
fn generated_images_read_like_qemu() {
    let dir = generate();
    for name in ["vdi-dynamic.vdi", "vdi-static.vdi"] {
        let img = dir.path().join(name);
        let raw = qemu_raw(&img, "vdi", dir.path());
        let src = open(&img);
        assert_eq!(src.info().format, "vdi");
        assert_same_as_raw(src.as_ref(), &raw);
        vhd_support::assert_parallel_reads(src.as_ref(), &raw);
    }
}

fn open_bytes(bytes: Vec<u8>) -> v2x_formats::Result<Box<dyn BlockSource>> {
    let opener = Opener::new(Path::new("t.vdi"), &OpenOptions::default())?;
    opener.open_file(HostFile::from_bytes("t.vdi", bytes), Some(Format::Vdi), 0)
}

fn err_of(bytes: Vec<u8>) -> Error {
    match open_bytes(bytes) {
        Ok(_) => panic!("mutant opened"),
        Err(e) => e,
    }
}

fn put32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}

/// A 4-block dynamic VDI with 1 MiB blocks: block 0 stored, 1 free,
/// 2 discarded (zero), 3 stored.
fn small() -> Vec<u8> {
    let mut b = vec![0u8; 0x200];
    b[..40].copy_from_slice(b"<<< Oracle VM VirtualBox Disk Image >>>\n");
    put32(&mut b, off::SIGNATURE, 0xbeda_107f);
    put32(&mut b, off::VERSION, 0x0001_0001);
    put32(&mut b, off::HEADER_SIZE, 0x180);
    put32(&mut b, off::IMAGE_TYPE, 1);
    put32(&mut b, off::BLOCKS_OFFSET, 0x200);
    put32(&mut b, off::DATA_OFFSET, 0x400);
    b[off::DISK_SIZE..off::DISK_SIZE + 8].copy_from_slice(&(4u64 << 20).to_le_bytes());
    put32(&mut b, off::BLOCK_SIZE, 1 << 20);
    put32(&mut b, off::BLOCKS, 4);
    for e in [0u32, 0xffff_ffff, 0xffff_fffe, 1] {
        b.extend_from_slice(&e.to_le_bytes());
    }
    b.resize(0x400, 0);
    b.extend(std::iter::repeat_n(0x11, 1 << 20));
    b.extend(std::iter::repeat_n(0x44, 1 << 20));
    b
}

#[test]
fn block_map_values() {
    let src = open_bytes(small()).unwrap();
    let map = src.map(0, 4 << 20).unwrap();
    let kinds: Vec<_> = map.iter().map(|e| e.kind).collect();
    use ExtentKind::*;
    assert_eq!(kinds, [Data, Unallocated, Zero, Data]);
    let mut buf = vec![9u8; 4 << 20];
    src.read_at(0, &mut buf).unwrap();
    for (i, want) in [0x11u8, 0, 0, 0x44].iter().enumerate() {
        assert!(buf[i << 20..(i + 1) << 20].iter().all(|b| b == want), "block {i}");
    }
}

#[test]
fn mutated_fields_fail_with_exact_kinds() {
    let limit = |e: &Error, w: &str| matches!(e, Error::LimitExceeded { what, .. } if *what == w);
    let set = |o: usize, v: u32| {
        let mut b = small();
        put32(&mut b, o, v);
        err_of(b)
    };
    assert!(matches!(set(off::SIGNATURE, 0), Error::Corrupt { .. }));
    let e = set(off::VERSION, 0x0001_0000);
    assert!(
        matches!(e, Error::Unsupported(_)) && e.to_string().contains("1.0"),
        "{e}"
    );
    assert!(matches!(set(off::IMAGE_TYPE, 4), Error::Unsupported(_)));
    assert!(matches!(set(off::IMAGE_TYPE, 9), Error::Corrupt { .. }));
    assert!(matches!(set(off::BLOCK_SIZE, 3000), Error::Corrupt { .. }));
    assert!(limit(
        &set(off::BLOCK_SIZE, (vdi::MAX_BLOCK_SIZE * 2) as u32),
        "VDI block size"
    ));
    assert!(limit(
        &set(off::BLOCK_EXTRA, (vdi::MAX_BLOCK_EXTRA + 1) as u32),
        "VDI block extra data"
    ));
    assert!(
        matches!(set(off::BLOCKS, 3), Error::Corrupt { .. }),
        "too few blocks"
    );
    assert!(matches!(
        set(off::BLOCKS_OFFSET, 0x7fff_0000),
        Error::Corrupt { .. }
    ));
    assert!(
        matches!(set(0x200 + 4, 7), Error::Corrupt { .. }),
        "map entry beyond blocks"
    );

    let mut b = small();
    b[off::DISK_SIZE..off::DISK_SIZE + 8].copy_from_slice(&(vdi::MAX_DISK_SIZE + 1).to_le_bytes());
    assert!(limit(&err_of(b), "VDI disk size"));

    let mut b = small();
    b[off::DISK_SIZE..off::DISK_SIZE + 8].copy_from_slice(&(vdi::MAX_BLOCKS << 20).to_le_bytes());
    put32(&mut b, off::BLOCKS, vdi::MAX_BLOCKS as u32 + 1);
    assert!(limit(&err_of(b), "VDI blocks"));
}

#[test]
fn truncated_data_block_is_corrupt_on_read() {
    let mut b = small();
    b.truncate(b.len() - 4096);
    let src = open_bytes(b).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let e = src.read_at(3 << 20, &mut buf).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
}
