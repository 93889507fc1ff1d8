//! The cpio "newc" (070701) and "crc" (070702) header: 110 ASCII bytes, a
//! NUL-terminated name, then the data, both padded to 4 bytes.

use serde::Serialize;
use v2x_formats::{Error, Result};

/// Size of a newc/crc header.
pub const HEADER_LEN: usize = 110;

/// Longest entry name accepted, NUL included (Linux's PATH_MAX).
pub const MAX_NAME_LEN: u64 = 4096;

/// The name that ends an archive.
pub const TRAILER: &str = "TRAILER!!!";

/// File type bits of `mode`.
const S_IFMT: u32 = 0o170000;

/// One archive member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// The name as stored (often with a leading `./` or none at all).
    pub name: String,
    /// Unix mode: type and permission bits.
    pub mode: u32,
    /// Data size in bytes (for a symlink, the target length).
    pub size: u64,
    /// Index of the initramfs segment holding the entry.
    pub segment: usize,
}

impl Entry {
    /// The name normalised to an absolute path ("./usr/lib" and "usr/lib" give "/usr/lib").
    pub fn path(&self) -> String {
        normalize(&self.name)
    }
    /// True for a regular file.
    pub fn is_file(&self) -> bool {
        self.mode & S_IFMT == 0o100000
    }
    /// True for a directory.
    pub fn is_dir(&self) -> bool {
        self.mode & S_IFMT == 0o040000
    }
    /// True for a symbolic link.
    pub fn is_symlink(&self) -> bool {
        self.mode & S_IFMT == 0o120000
    }
}

/// Turns an archive name or a lookup path into the absolute form used for matching.
pub fn normalize(name: &str) -> String {
    let mut out = String::new();
    for c in name.split('/').filter(|c| !c.is_empty() && *c != ".") {
        out.push('/');
        out.push_str(c);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// The fields of a header that the parser needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    pub mode: u32,
    pub filesize: u32,
    pub namesize: u32,
    pub check: u32,
    /// True for the "crc" variant, whose `check` is the byte sum of the data.
    pub has_crc: bool,
}

/// Parses a 110-byte header found at stream offset `at` (for messages).
pub(crate) fn parse_header(h: &[u8; HEADER_LEN], at: u64) -> Result<Header> {
    let has_crc = match &h[..6] {
        b"070701" => false,
        b"070702" => true,
        b"070707" => {
            return Err(Error::unsupported(format!(
                "old portable (odc) cpio header at {at:#x}: the kernel reads only newc"
            )))
        }
        _ => return Err(Error::corrupt("cpio header magic is not 070701/070702", at)),
    };
    let field = |i: usize| -> Result<u32> {
        let start = 6 + 8 * i;
        let text = &h[start..start + 8];
        let s = std::str::from_utf8(text)
            .ok()
            .filter(|s| s.bytes().all(|c| c.is_ascii_hexdigit()))
            .ok_or_else(|| {
                Error::corrupt(
                    format!("cpio header field {i} is not 8 hex digits"),
                    at + start as u64,
                )
            })?;
        u32::from_str_radix(s, 16)
            .map_err(|_| Error::corrupt(format!("cpio header field {i}"), at + start as u64))
    };
    let header = Header {
        mode: field(1)?,
        filesize: field(6)?,
        namesize: field(11)?,
        check: field(12)?,
        has_crc,
    };
    if header.namesize == 0 {
        return Err(Error::corrupt("cpio entry has an empty name", at + 94));
    }
    v2x_formats::error::check_limit("cpio entry name length", u64::from(header.namesize), MAX_NAME_LEN)?;
    Ok(header)
}

/// Bytes of padding after `len` bytes that started at a 4-aligned offset.
pub(crate) fn pad4(len: u64) -> u64 {
    (4 - len % 4) % 4
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(magic: &str, mode: u32, filesize: u32, namesize: u32) -> [u8; HEADER_LEN] {
        let s = format!(
            "{magic}{:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{filesize:08x}{:08x}{:08x}{:08x}{:08x}{namesize:08x}{:08x}",
            1, 0, 0, 1, 0, 0, 0, 0, 0, 0
        );
        s.as_bytes().try_into().unwrap()
    }

    #[test]
    fn fields_and_types() {
        let h = parse_header(&header("070701", 0o100644, 5, 4), 0).unwrap();
        assert_eq!(
            (h.mode, h.filesize, h.namesize, h.has_crc),
            (0o100644, 5, 4, false)
        );
        assert!(parse_header(&header("070702", 0o40755, 0, 4), 0).unwrap().has_crc);
        let e = Entry {
            name: "./usr/lib".into(),
            mode: 0o40755,
            size: 0,
            segment: 0,
        };
        assert!(e.is_dir() && !e.is_file() && !e.is_symlink());
        assert_eq!(e.path(), "/usr/lib");
        assert_eq!(normalize("."), "/");
    }

    #[test]
    fn absurd_name_length_is_capped() {
        let h = header("070701", 0o100644, 0, 0xffff_ffff);
        assert!(matches!(
            parse_header(&h, 0),
            Err(Error::LimitExceeded {
                what: "cpio entry name length",
                ..
            })
        ));
        let h = header("070701", 0o100644, 0, MAX_NAME_LEN as u32);
        assert!(parse_header(&h, 0).is_ok());
    }

    #[test]
    fn bad_magic_and_digits_name_the_offset() {
        let mut h = header("070701", 0o100644, 0, 4);
        h[0] = b'x';
        assert!(matches!(
            parse_header(&h, 0x200),
            Err(Error::Corrupt { offset: 0x200, .. })
        ));
        let mut h = header("070701", 0o100644, 0, 4);
        h[6 + 8 * 6] = b'g';
        assert!(matches!(
            parse_header(&h, 0x200),
            Err(Error::Corrupt { offset: 0x236, .. })
        ));
        assert!(matches!(
            parse_header(&header("070707", 0, 0, 4), 0),
            Err(Error::Unsupported(_))
        ));
    }
}
