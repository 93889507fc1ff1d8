//! Unit tests with archives built in memory; the tests against real `cpio`,
//! gzip, xz, zstd and lz4 output are in tests/linux_inspect.rs.

use super::*;

/// Builds a newc archive (what `cpio -o -H newc` writes, without the 512-byte block padding).
fn newc(entries: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut all: Vec<(&str, u32, &[u8])> = entries.to_vec();
    all.push((TRAILER, 0, b""));
    for (i, (name, mode, data)) in all.iter().enumerate() {
        out.extend_from_slice(
            format!(
                "070701{:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
                i + 1,
                0,
                0,
                1,
                0,
                data.len(),
                0,
                0,
                0,
                0,
                name.len() + 1,
                0
            )
            .as_bytes(),
        );
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out.extend_from_slice(data);
        while out.len() % 4 != 0 {
            out.push(0);
        }
    }
    out
}

fn sample() -> Vec<u8> {
    newc(&[
        (".", 0o40755, b""),
        ("usr", 0o40755, b""),
        ("usr/init", 0o100755, b"#!/bin/sh\necho hi\n"),
        ("bin", 0o120777, b"usr/bin"),
    ])
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn lists_and_reads_a_plain_archive() {
    let a = sample();
    let l = list(&a).unwrap();
    let names: Vec<_> = l.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, [".", "usr", "usr/init", "bin"]);
    assert_eq!(l.entries[2].size, 18);
    assert!(l.entries[3].is_symlink());
    assert!(l.contains("/usr/init") && !l.contains("/usr/nope"));
    assert_eq!(
        read_file(&a, "/usr/init").unwrap().unwrap(),
        b"#!/bin/sh\necho hi\n"
    );
    assert_eq!(read_file(&a, "/bin").unwrap(), None);
}

#[test]
fn plain_then_gzip_segments_with_padding() {
    let mut img = newc(&[("kernel/x86/microcode/GenuineIntel.bin", 0o100644, b"ucode")]);
    img.resize(512, 0);
    img.extend(gzip(&sample()));
    img.extend([0u8; 16]);
    img.extend(gzip(&newc(&[("late", 0o100644, b"second")])));
    let l = list(&img).unwrap();
    assert_eq!(l.segments.len(), 3);
    assert_eq!(l.segments[0].compression, None);
    assert_eq!(l.segments[1].compression, Some(Compression::Gzip));
    assert_eq!(l.segments[1].offset, 512);
    assert_eq!(l.segments[2].entries, 1);
    assert_eq!(l.entries.len(), 6);
    assert_eq!(read_file(&img, "late").unwrap().unwrap(), b"second");
}

#[test]
fn later_copy_of_a_file_wins() {
    let mut img = newc(&[("etc/x", 0o100644, b"one")]);
    img.extend(newc(&[("./etc/x", 0o100644, b"two")]));
    assert_eq!(read_file(&img, "/etc/x").unwrap().unwrap(), b"two");
}

#[test]
fn truncated_header_is_corrupt_at_its_offset() {
    let a = sample();
    // Cut the archive in the middle of the third header.
    let third = 112 + 116;
    let cut = &a[..third + 50];
    match list(&cut) {
        Err(Error::Corrupt { what, offset }) => {
            assert!(what.contains("header cut short"), "{what}");
            assert_eq!(offset, third as u64);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn absurd_namesize_is_a_limit() {
    let mut a = sample();
    // namesize is field 11 of the first header: bytes 94..102.
    a[94..102].copy_from_slice(b"7fffffff");
    assert!(matches!(
        list(&a),
        Err(Error::LimitExceeded {
            what: "cpio entry name length",
            ..
        })
    ));
}

#[test]
fn huge_filesize_is_cut_short_or_refused() {
    let mut a = sample();
    // filesize is field 6 of the header at 228 (usr/init).
    let at = 112 + 116;
    a[at + 54..at + 62].copy_from_slice(b"fffffff0");
    match list(&a) {
        Err(Error::Corrupt { what, offset }) => {
            assert!(what.contains("data of usr/init cut short"), "{what}");
            assert_eq!(offset, (at + 120) as u64); // header 110 + "usr/init\0" 9, padded to 4
        }
        other => panic!("{other:?}"),
    }
    // Asked for, the size is refused before anything is allocated.
    assert!(matches!(
        read_file(&a, "usr/init"),
        Err(Error::LimitExceeded {
            what: "initramfs file size",
            ..
        })
    ));
}

#[test]
fn name_without_nul_is_corrupt() {
    let mut a = sample();
    a[110] = b'x'; // "." becomes "x"; the NUL at 111 moves nowhere
    a[111] = b'y';
    assert!(matches!(list(&a), Err(Error::Corrupt { offset: 110, .. })));
}

#[test]
fn crc_variant_is_checked() {
    let mut a = newc(&[("f", 0o100644, b"abc")]);
    a[5] = b'2';
    // check field (12) at 102..110: 0 is wrong for "abc" (sum 0x126).
    assert!(matches!(list(&a), Err(Error::Corrupt { offset: 0, .. })));
    a[102..110].copy_from_slice(b"00000126");
    assert_eq!(list(&a).unwrap().entries.len(), 1);
}

#[test]
fn unknown_data_and_unsupported_compression() {
    let mut a = sample();
    a.extend(b"garbage!");
    let end = sample().len() as u64;
    assert!(matches!(list(&a), Err(Error::Corrupt { offset, .. }) if offset == end));
    let mut b = sample();
    b.extend(b"BZh91AY&SY");
    assert!(matches!(list(&b), Err(Error::Unsupported(_))));
    // odc archives are not what the kernel reads.
    assert!(matches!(
        list(&&b"070707"[..]).map(|_| ()),
        Err(Error::Unsupported(_)) | Err(Error::Corrupt { .. })
    ));
}

#[test]
fn truncated_gzip_is_corrupt() {
    let g = gzip(&sample());
    let cut = &g[..g.len() - 5];
    match list(&cut) {
        Err(Error::Corrupt { what, .. }) => assert!(what.contains("gzip"), "{what}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn unpacked_budget_is_enforced() {
    let big = vec![7u8; 300 << 10];
    let g = gzip(&newc(&[("big", 0o100644, &big)]));
    assert!(list_limited(&g, 1 << 20).is_ok());
    assert!(matches!(
        list_limited(&g, 100 << 10),
        Err(Error::LimitExceeded {
            what: "unpacked initramfs bytes",
            ..
        })
    ));
}

/// Endless identical one-byte-name entries, generated on the fly.
struct Endless {
    entry: Vec<u8>,
    count: u64,
}

impl ByteSource for Endless {
    fn len(&self) -> u64 {
        self.entry.len() as u64 * self.count
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let n = (buf.len() as u64).min(self.len().saturating_sub(offset)) as usize;
        let e = self.entry.len() as u64;
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = self.entry[((offset + i as u64) % e) as usize];
        }
        Ok(n)
    }
}

#[test]
fn entry_count_is_capped() {
    let one = newc(&[("a", 0o100644, b"")]);
    let entry = one[..112].to_vec();
    let src = Endless {
        entry,
        count: MAX_CPIO_ENTRIES as u64 + 1,
    };
    assert!(matches!(
        list(&src),
        Err(Error::LimitExceeded {
            what: "initramfs entries",
            ..
        })
    ));
}

#[test]
fn segment_count_is_capped() {
    let mut img = Vec::new();
    for _ in 0..=MAX_SEGMENTS {
        img.extend(newc(&[]));
    }
    assert!(matches!(
        list(&img),
        Err(Error::LimitExceeded {
            what: "initramfs segments",
            ..
        })
    ));
}
