//! VHDX reader tests: qemu-img generated images against qemu-img's raw
//! output, and mutations of documented fields with the exact error kind.

mod vhd_support;

use std::path::Path;
use v2x_formats::error::Error;
use v2x_formats::file::HostFile;
use v2x_formats::open::{OpenOptions, Opener};
use v2x_formats::vhdx::{self, header_off};
use v2x_formats::{BlockSource, ExtentKind, Format};
use vhd_support::{assert_same_as_raw, generate, open, qemu_raw};

const IMAGES: [&str; 4] = [
    "vhdx-dynamic-1M.vhdx",
    "vhdx-dynamic-8M.vhdx",
    "vhdx-dynamic-32M.vhdx",
    "vhdx-fixed-8M.vhdx",
];

#[test]
fn generated_images_read_like_qemu() {
    let dir = generate();
    for name in IMAGES {
        let img = dir.path().join(name);
        let raw = qemu_raw(&img, "vhdx", dir.path());
        let src = open(&img);
        assert_eq!(src.info().format, "vhdx");
        assert_same_as_raw(src.as_ref(), &raw);
        vhd_support::assert_parallel_reads(src.as_ref(), &raw);
    }
    let fixed = open(&dir.path().join("vhdx-fixed-8M.vhdx"));
    assert_eq!(fixed.info().subformat.as_deref(), Some("fixed"));
    assert_eq!(fixed.info().cluster_size, Some(8 << 20));
}

// ---- A compact hand-built VHDX (256 KiB), for mutations, log replay and fuzz seeds.

const MIB: u64 = 1 << 20;
const META_AT: usize = 0x11000;
const META_ITEMS_AT: usize = 0x21000;
const BAT_AT: usize = 0x22000;
const LOG_AT: usize = 0x23000;
const REGION_AT: usize = 0x30000;
const LOG_GUID: [u8; 16] = [0x5a; 16];

fn guid(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> [u8; 16] {
    let mut g = [0u8; 16];
    g[..4].copy_from_slice(&d1.to_le_bytes());
    g[4..6].copy_from_slice(&d2.to_le_bytes());
    g[6..8].copy_from_slice(&d3.to_le_bytes());
    g[8..].copy_from_slice(&d4);
    g
}

fn put32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_le_bytes());
}
fn crc_fix(b: &mut [u8], start: usize, len: usize) {
    put32(b, start + 4, 0);
    let c = crc32c::crc32c(&b[start..start + len]);
    put32(b, start + 4, c);
}

/// One log descriptor: a 4 KiB data page or a zeroed range.
enum Desc {
    Data(u64, u8),
    Zero(u64, u64),
}

/// The parts of the compact image a test may vary.
struct Vx {
    size: u64,
    /// BAT entries (payload and bitmap entries interleaved as on disk).
    bat: Vec<u64>,
    /// Log entries (sequence number, descriptors); empty = no log.
    log: Vec<(u64, Vec<Desc>)>,
    /// Where the log is and how long.
    log_at: usize,
    log_len: usize,
}

impl Default for Vx {
    fn default() -> Self {
        // Block 0 ZERO, 1 NOT_PRESENT, 2 FULLY_PRESENT at file offset 0
        // (the disk ends 64 KiB into block 2, so that is the file-id area).
        Vx {
            size: 2 * MIB + 0x10000,
            bat: vec![2, 0, 6],
            log: vec![],
            log_at: LOG_AT,
            log_len: 0x8000,
        }
    }
}

impl Vx {
    fn build(&self) -> Vec<u8> {
        let mut b = vec![0u8; 0x40000.max(self.log_at + self.log_len)];
        b[..8].copy_from_slice(b"vhdxfile");
        for (i, c) in "v2x test".encode_utf16().enumerate() {
            b[8 + 2 * i..10 + 2 * i].copy_from_slice(&c.to_le_bytes());
        }
        // Header 1 (header 2 stays empty: invalid, so header 1 is current).
        let h = 0x10000;
        b[h..h + 4].copy_from_slice(b"head");
        put64(&mut b, h + header_off::SEQUENCE, 7);
        b[h + 32..h + 48].copy_from_slice(&[0x33; 16]);
        if !self.log.is_empty() {
            b[h + header_off::LOG_GUID..h + header_off::LOG_GUID + 16].copy_from_slice(&LOG_GUID);
        }
        b[h + header_off::VERSION] = 1;
        put32(&mut b, h + header_off::LOG_LENGTH, self.log_len as u32);
        put64(&mut b, h + header_off::LOG_OFFSET, self.log_at as u64);
        crc_fix(&mut b, h, 4096);
        // Region table.
        let r = REGION_AT;
        b[r..r + 4].copy_from_slice(b"regi");
        put32(&mut b, r + 8, 2);
        let bat_id = guid(
            0x2dc2_7766,
            0xf623,
            0x4200,
            [0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08],
        );
        let meta_id = guid(
            0x8b7c_a206,
            0x4790,
            0x4b9a,
            [0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e],
        );
        for (i, (id, at, len)) in [(bat_id, BAT_AT, 0x1000), (meta_id, META_AT, 0x11000)]
            .iter()
            .enumerate()
        {
            let e = r + 16 + 32 * i;
            b[e..e + 16].copy_from_slice(id);
            put64(&mut b, e + 16, *at as u64);
            put32(&mut b, e + 24, *len);
            put32(&mut b, e + 28, 1);
        }
        crc_fix(&mut b, r, 0x10000);
        // Metadata table and items.
        let m = META_AT;
        b[m..m + 8].copy_from_slice(b"metadata");
        let items: [([u8; 16], Vec<u8>); 4] = [
            (
                guid(
                    0xcaa1_6737,
                    0xfa36,
                    0x4d43,
                    [0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b],
                ),
                [(MIB as u32).to_le_bytes(), 0u32.to_le_bytes()].concat(),
            ),
            (
                guid(
                    0x2fa5_4224,
                    0xcd1b,
                    0x4876,
                    [0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8],
                ),
                self.size.to_le_bytes().to_vec(),
            ),
            (
                guid(
                    0x8141_bf1d,
                    0xa96f,
                    0x4709,
                    [0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f],
                ),
                512u32.to_le_bytes().to_vec(),
            ),
            (
                guid(
                    0xcda3_48c7,
                    0x445d,
                    0x4471,
                    [0x9c, 0xc9, 0xe9, 0x88, 0x52, 0x51, 0xc5, 0x56],
                ),
                4096u32.to_le_bytes().to_vec(),
            ),
        ];
        b[m + 10..m + 12].copy_from_slice(&(items.len() as u16).to_le_bytes());
        let mut item_off = META_ITEMS_AT - META_AT;
        for (i, (id, v)) in items.iter().enumerate() {
            let e = m + 32 + 32 * i;
            b[e..e + 16].copy_from_slice(id);
            put32(&mut b, e + 16, item_off as u32);
            put32(&mut b, e + 20, v.len() as u32);
            put32(&mut b, e + 24, 4 | 2);
            b[META_AT + item_off..META_AT + item_off + v.len()].copy_from_slice(v);
            item_off += 64;
        }
        for (i, e) in self.bat.iter().enumerate() {
            put64(&mut b, BAT_AT + 8 * i, *e);
        }
        // Log entries, one after another from the start of the log.
        let mut at = 0usize;
        for (seq, descs) in &self.log {
            let data_pages = descs.iter().filter(|d| matches!(d, Desc::Data(..))).count();
            let len = 4096 * (1 + data_pages);
            let e = self.log_at + at;
            b[e..e + 4].copy_from_slice(b"loge");
            put32(&mut b, e + 8, len as u32);
            put32(&mut b, e + 12, 0); // tail: the first entry
            put64(&mut b, e + 16, *seq);
            put32(&mut b, e + 24, descs.len() as u32);
            b[e + 32..e + 48].copy_from_slice(&LOG_GUID);
            put64(&mut b, e + 48, 0x40000);
            put64(&mut b, e + 56, 0x40000);
            let mut page = e + 4096;
            for (i, d) in descs.iter().enumerate() {
                let o = e + 64 + 32 * i;
                match d {
                    Desc::Zero(off, len) => {
                        b[o..o + 4].copy_from_slice(b"zero");
                        put64(&mut b, o + 8, *len);
                        put64(&mut b, o + 16, *off);
                    }
                    Desc::Data(off, fill) => {
                        b[o..o + 4].copy_from_slice(b"desc");
                        b[o + 4..o + 8].fill(*fill);
                        b[o + 8..o + 16].fill(*fill);
                        put64(&mut b, o + 16, *off);
                        b[page..page + 4].copy_from_slice(b"data");
                        put32(&mut b, page + 4, (*seq >> 32) as u32);
                        b[page + 8..page + 4092].fill(*fill);
                        put32(&mut b, page + 4092, *seq as u32);
                        page += 4096;
                    }
                }
                put64(&mut b, o + 24, *seq);
            }
            crc_fix(&mut b, e, len);
            at += len;
        }
        b
    }
}

fn open_bytes(bytes: Vec<u8>) -> v2x_formats::Result<Box<dyn BlockSource>> {
    let opener = Opener::new(Path::new("t.vhdx"), &OpenOptions::default())?;
    opener.open_file(HostFile::from_bytes("t.vhdx", bytes), Some(Format::Vhdx), 0)
}

fn err_of(bytes: Vec<u8>) -> Error {
    match open_bytes(bytes) {
        Ok(_) => panic!("mutant opened"),
        Err(e) => e,
    }
}

fn read_all(src: &dyn BlockSource) -> Vec<u8> {
    let mut v = vec![0xeeu8; src.size() as usize];
    src.read_at(0, &mut v).unwrap();
    v
}

#[test]
fn compact_image_block_states() {
    let b = Vx::default().build();
    let src = open_bytes(b.clone()).unwrap();
    let kinds: Vec<_> = src.map(0, src.size()).unwrap().iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [ExtentKind::Zero, ExtentKind::Unallocated, ExtentKind::Data]
    );
    let got = read_all(src.as_ref());
    assert!(got[..2 * MIB as usize].iter().all(|x| *x == 0));
    assert_eq!(&got[2 * MIB as usize..], &b[..0x10000]);
    // UNDEFINED and UNMAPPED read as zero in a dynamic disk too.
    for s in [1, 3] {
        let src = open_bytes(
            Vx {
                bat: vec![s, s, 6],
                ..Vx::default()
            }
            .build(),
        )
        .unwrap();
        assert!(read_all(src.as_ref())[..2 * MIB as usize].iter().all(|x| *x == 0));
    }
}

#[test]
fn log_is_replayed_in_memory() {
    let vx = Vx {
        log: vec![
            (41, vec![Desc::Data(0, 0xab), Desc::Zero(0x1000, 0x2000)]),
            (42, vec![Desc::Data(0x2000, 0xcd)]),
        ],
        ..Vx::default()
    };
    let bytes = vx.build();
    let src = open_bytes(bytes.clone()).unwrap();
    assert!(
        src.info().notes[0].contains("replayed 2"),
        "{:?}",
        src.info().notes
    );
    let got = read_all(src.as_ref());
    let blk2 = &got[2 * MIB as usize..];
    assert!(blk2[..0x1000].iter().all(|x| *x == 0xab));
    assert!(blk2[0x1000..0x2000].iter().all(|x| *x == 0));
    assert!(blk2[0x2000..0x3000].iter().all(|x| *x == 0xcd));
    assert_eq!(&blk2[0x3000..], &bytes[0x3000..0x10000]);
}

#[test]
fn log_replay_changes_the_bat() {
    // The log zeroes the BAT page, so every block becomes NOT_PRESENT: the
    // BAT is read through the replayed view, not from the file.
    let vx = Vx {
        log: vec![(5, vec![Desc::Zero(BAT_AT as u64, 0x1000)])],
        ..Vx::default()
    };
    let src = open_bytes(vx.build()).unwrap();
    let kinds: Vec<_> = src.map(0, src.size()).unwrap().iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [ExtentKind::Unallocated],
        "all blocks NOT_PRESENT after replay"
    );
}

#[test]
fn torn_log_entries_are_not_replayed() {
    let vx = Vx {
        log: vec![(9, vec![Desc::Data(0, 0xab)])],
        ..Vx::default()
    };
    let mut b = vx.build();
    b[LOG_AT + 4096 + 100] ^= 1; // breaks the entry CRC
    let src = open_bytes(b.clone()).unwrap();
    assert!(src.info().notes[0].contains("no valid sequence"));
    assert_eq!(&read_all(src.as_ref())[2 * MIB as usize..], &b[..0x10000]);
    // A data sector whose sequence stamp disagrees (CRC fixed up) is corrupt.
    let mut b = vx.build();
    put32(&mut b, LOG_AT + 4096 + 4092, 8);
    crc_fix(&mut b, LOG_AT, 8192);
    assert!(matches!(err_of(b), Error::Corrupt { .. }));
}

#[test]
fn log_caps() {
    let limit = |e: &Error, w: &str| matches!(e, Error::LimitExceeded { what, .. } if *what == w);
    let vx = Vx {
        log: vec![(9, vec![Desc::Data(0, 0xab)])],
        ..Vx::default()
    };
    let mut b = vx.build();
    put32(
        &mut b,
        0x10000 + header_off::LOG_LENGTH,
        (vhdx::MAX_LOG_LEN + 4096) as u32,
    );
    crc_fix(&mut b, 0x10000, 4096);
    assert!(limit(&err_of(b), "VHDX log length"));
    // A zero descriptor reaching past MAX_REPLAY_FILE_OFFSET.
    let vx = Vx {
        log: vec![(9, vec![Desc::Zero(vhdx::MAX_REPLAY_FILE_OFFSET, 4096)])],
        ..Vx::default()
    };
    assert!(matches!(err_of(vx.build()), Error::Corrupt { .. }));
    // More than MAX_LOG_HEADS_TRIED torn entries with higher sequence numbers
    // hide the real one: nothing is replayed, and opening stays quick.
    let n = vhdx::MAX_LOG_HEADS_TRIED as u64;
    let mut log = vec![(1, vec![Desc::Zero(0, 4096)])];
    log.extend((0..n).map(|i| (100 + i, vec![])));
    let vx = Vx {
        log,
        log_at: 0x40000,
        log_len: 0x20000,
        ..Vx::default()
    };
    let mut b = vx.build();
    for i in 1..=n as usize {
        b[0x40000 + 8192 + (i - 1) * 4096 + 4] ^= 1; // bad CRC on each
    }
    let src = open_bytes(b).unwrap();
    assert!(src.info().notes[0].contains("no valid sequence"));
}

#[test]
fn mutated_fields_fail_with_exact_kinds() {
    let good = Vx::default().build();
    let limit = |e: &Error, w: &str| matches!(e, Error::LimitExceeded { what, .. } if *what == w);
    let corrupt = |e: Error| matches!(e, Error::Corrupt { .. });

    let mut b = good.clone();
    b[0] = b'X';
    assert!(corrupt(err_of(b)), "file signature");

    let mut b = good.clone();
    b[0x10000 + header_off::CHECKSUM] ^= 1;
    assert!(corrupt(err_of(b)), "only header has a bad CRC");

    let mut b = good.clone();
    b[0x10000 + header_off::VERSION] = 2;
    crc_fix(&mut b, 0x10000, 4096);
    assert!(corrupt(err_of(b)), "header version");

    let mut b = good.clone();
    b[REGION_AT + 100] ^= 1;
    assert!(corrupt(err_of(b)), "region table CRC (no second table)");

    let mut b = good.clone();
    put32(&mut b, REGION_AT + 8, vhdx::MAX_REGION_ENTRIES as u32 + 1);
    crc_fix(&mut b, REGION_AT, 0x10000);
    assert!(limit(&err_of(b), "VHDX region table entries"));

    let mut b = good.clone();
    put32(&mut b, REGION_AT + 8, 3);
    b[REGION_AT + 16 + 64..REGION_AT + 16 + 80].fill(0x77);
    put32(&mut b, REGION_AT + 16 + 64 + 28, 1);
    crc_fix(&mut b, REGION_AT, 0x10000);
    assert!(
        matches!(err_of(b), Error::Unsupported(_)),
        "unknown required region"
    );

    let mut b = good.clone();
    b[META_AT + 10..META_AT + 12].copy_from_slice(&(vhdx::MAX_METADATA_ENTRIES as u16 + 1).to_le_bytes());
    assert!(limit(&err_of(b), "VHDX metadata entries"));

    let mut b = good.clone();
    put32(&mut b, META_AT + 32 + 20, vhdx::MAX_METADATA_ITEM_LEN as u32 + 1);
    assert!(limit(&err_of(b), "VHDX metadata item length"));

    let mut b = good.clone();
    b[META_AT + 10] = 5;
    b[META_AT + 32 + 4 * 32..META_AT + 32 + 4 * 32 + 16].fill(0x66);
    put32(&mut b, META_AT + 32 + 4 * 32 + 24, 4);
    assert!(
        matches!(err_of(b), Error::Unsupported(_)),
        "unknown required metadata item"
    );

    let mut b = good.clone();
    put32(&mut b, META_ITEMS_AT, 3 << 20);
    assert!(corrupt(err_of(b)), "block size not a power of two");

    let mut b = good.clone();
    put64(&mut b, META_ITEMS_AT + 64, vhdx::MAX_DISK_SIZE + 1);
    assert!(limit(&err_of(b), "VHDX disk size"));

    let mut b = good.clone();
    put64(&mut b, META_ITEMS_AT + 64, (vhdx::MAX_BAT_ENTRIES + 1) * MIB);
    assert!(limit(&err_of(b), "VHDX BAT entries"));

    let mut b = good.clone();
    put64(&mut b, META_ITEMS_AT + 64, 600 * MIB);
    assert!(corrupt(err_of(b)), "BAT region too small for the disk");

    let mut b = good.clone();
    put32(&mut b, META_ITEMS_AT + 128, 1024);
    assert!(corrupt(err_of(b)), "logical sector size");

    let mut b = good;
    put64(&mut b, BAT_AT, 4);
    let src = open_bytes(b).unwrap();
    assert!(
        matches!(src.map(0, MIB).unwrap_err(), Error::Corrupt { .. }),
        "invalid block state"
    );
}

#[test]
#[ignore = "writes fuzz seeds into fuzz/corpus/vhdx; run by hand"]
fn write_fuzz_seeds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/vhdx");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("compact.vhdx"), Vx::default().build()).unwrap();
    let logged = Vx {
        log: vec![
            (41, vec![Desc::Data(0, 0xab), Desc::Zero(0x1000, 0x2000)]),
            (42, vec![Desc::Data(0x2000, 0xcd)]),
        ],
        ..Vx::default()
    };
    std::fs::write(dir.join("compact-log.vhdx"), logged.build()).unwrap();
}

#[test]
fn dynamic_writer_output_reads_back_and_qemu_agrees() {
    use v2x_formats::sink::{ImageWriter, WriteOptions};
    let dir = generate();
    let raw = std::fs::read(dir.path().join("pattern.raw")).unwrap();
    for bs in [MIB, 8 * MIB] {
        let out = dir.path().join(format!("out-{bs}.vhdx"));
        let file = std::fs::File::create(&out).unwrap();
        let opts = WriteOptions {
            cluster_size: Some(bs),
            ..WriteOptions::default()
        };
        let mut w: Box<dyn ImageWriter> =
            Box::new(vhdx::VhdxDynamicWriter::create(file, raw.len() as u64, &opts).unwrap());
        let enc = w.encoder();
        let step = w.cluster_size() as usize;
        for off in (0..raw.len()).step_by(step) {
            let end = (off + step).min(raw.len());
            w.write_chunk(&enc.encode(off as u64, raw[off..end].to_vec()).unwrap())
                .unwrap();
        }
        let summary = w.finish().unwrap();
        assert_eq!(summary.virtual_size, raw.len() as u64);
        let src = open(&out);
        assert_eq!(src.info().cluster_size, Some(bs));
        assert_same_as_raw(src.as_ref(), &dir.path().join("pattern.raw"));
        let holes = src.map(0, src.size()).unwrap();
        assert!(
            holes.iter().any(|e| e.kind == ExtentKind::Unallocated),
            "zero blocks stay holes"
        );
        vhd_support::run_tool("qemu-img", &["check", "-f", "vhdx", out.to_str().unwrap()]);
        let q = qemu_raw(&out, "vhdx", dir.path());
        assert_eq!(std::fs::read(q).unwrap(), raw, "qemu-img reads the same bytes");
    }
}

#[test]
fn dynamic_writer_refuses_a_bat_beyond_the_readers_cap() {
    use v2x_formats::sink::WriteOptions;
    let dir = tempfile::tempdir().unwrap();
    let file = std::fs::File::create(dir.path().join("big.vhdx")).unwrap();
    let opts = WriteOptions {
        cluster_size: Some(MIB),
        ..WriteOptions::default()
    };
    let size = (vhdx::MAX_BAT_ENTRIES + 1) * MIB;
    let e = vhdx::VhdxDynamicWriter::create(file, size, &opts).unwrap_err();
    assert!(matches!(e, Error::Invalid(_)), "{e}");
    let file = std::fs::File::create(dir.path().join("huge.vhdx")).unwrap();
    let e = vhdx::VhdxDynamicWriter::create(file, vhdx::MAX_DISK_SIZE + 512, &WriteOptions::default())
        .unwrap_err();
    assert!(matches!(e, Error::Invalid(_)), "{e}");
}
