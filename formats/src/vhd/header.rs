//! On-disk structures of VHD: the 512-byte footer, the 1024-byte dynamic
//! header and its parent locators. All fields are big-endian.

use crate::error::{check_limit, Error, Result};
use crate::vhd::runs::utf16_until_nul;

/// Length of the footer (and of its copy at offset 0 of dynamic disks).
pub const FOOTER_LEN: usize = 512;
/// Length of the dynamic disk header.
pub const DYN_HEADER_LEN: usize = 1024;
/// Footer magic.
pub const FOOTER_COOKIE: &[u8; 8] = b"conectix";
/// Dynamic header magic.
pub const DYN_COOKIE: &[u8; 8] = b"cxsparse";

/// Byte offsets of footer fields, for mutation tests.
pub mod footer_off {
    /// Data offset (u64): where the dynamic header is.
    pub const DATA_OFFSET: usize = 16;
    /// Creator application (4 ASCII bytes).
    pub const CREATOR_APP: usize = 28;
    /// Current size (u64): the guest-visible size.
    pub const CURRENT_SIZE: usize = 48;
    /// Disk type (u32): 2 fixed, 3 dynamic, 4 differencing.
    pub const DISK_TYPE: usize = 60;
    /// Checksum (u32): one's complement of the byte sum.
    pub const CHECKSUM: usize = 64;
    /// Unique ID (16 bytes).
    pub const UNIQUE_ID: usize = 68;
}

/// Byte offsets of dynamic header fields, for mutation tests.
pub mod dyn_off {
    /// BAT offset (u64).
    pub const TABLE_OFFSET: usize = 16;
    /// Max table entries (u32).
    pub const MAX_TABLE_ENTRIES: usize = 28;
    /// Block size (u32).
    pub const BLOCK_SIZE: usize = 32;
    /// Checksum (u32).
    pub const CHECKSUM: usize = 36;
    /// Parent unique ID (16 bytes).
    pub const PARENT_UNIQUE_ID: usize = 40;
    /// Parent name, 512 bytes of UTF-16BE.
    pub const PARENT_NAME: usize = 64;
    /// First of eight 24-byte parent locator entries.
    pub const LOCATORS: usize = 576;
}

/// Largest block size we accept (the format's default is 2 MiB).
pub const MAX_BLOCK_SIZE: u64 = 256 << 20;
/// Largest parent locator payload we read.
pub const MAX_LOCATOR_LEN: u64 = 64 << 10;

/// The three kinds of VHD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskType {
    /// The file is the disk followed by the footer.
    Fixed,
    /// Blocks are allocated on write through a BAT.
    Dynamic,
    /// Like dynamic, with unwritten sectors read from a parent disk.
    Differencing,
}

impl DiskType {
    /// The name qemu-img gives the subformat.
    pub fn name(self) -> &'static str {
        match self {
            DiskType::Fixed => "fixed",
            DiskType::Dynamic => "dynamic",
            DiskType::Differencing => "differencing",
        }
    }
}

/// The hard disk footer.
#[derive(Debug, Clone)]
pub struct Footer {
    /// Where the dynamic header is (all ones for fixed disks).
    pub data_offset: u64,
    /// Creator application, e.g. `vpc `, `win `, `qemu`, `d2v\0`.
    pub creator_app: [u8; 4],
    /// Guest-visible size in bytes.
    pub current_size: u64,
    /// Cylinders, heads, sectors per track.
    pub chs: (u16, u8, u8),
    /// Fixed, dynamic or differencing.
    pub disk_type: DiskType,
    /// Whether the stored checksum matches the bytes.
    pub checksum_ok: bool,
    /// Identifies the disk; a child names its parent by it.
    pub unique_id: [u8; 16],
}

fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn be64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_be_bytes(a)
}

/// One's complement of the byte sum of `buf`, skipping the 4-byte checksum at `skip`.
pub fn checksum(buf: &[u8], skip: usize) -> u32 {
    let sum = buf
        .iter()
        .enumerate()
        .filter(|(i, _)| !(skip..skip + 4).contains(i))
        .fold(0u32, |acc, (_, b)| acc.wrapping_add(u32::from(*b)));
    !sum
}

/// Parses a footer found at file offset `at`. A wrong cookie or disk type is
/// an error; a wrong checksum is only recorded in `checksum_ok`.
pub fn parse_footer(buf: &[u8], at: u64) -> Result<Footer> {
    if buf.len() < FOOTER_LEN || &buf[..8] != FOOTER_COOKIE {
        return Err(Error::corrupt("no VHD footer cookie 'conectix'", at));
    }
    let disk_type = match be32(buf, footer_off::DISK_TYPE) {
        2 => DiskType::Fixed,
        3 => DiskType::Dynamic,
        4 => DiskType::Differencing,
        t => {
            return Err(Error::corrupt(
                format!("VHD disk type {t} (expected 2, 3 or 4)"),
                at + footer_off::DISK_TYPE as u64,
            ))
        }
    };
    let mut creator_app = [0u8; 4];
    creator_app.copy_from_slice(&buf[28..32]);
    let mut unique_id = [0u8; 16];
    unique_id.copy_from_slice(&buf[68..84]);
    Ok(Footer {
        data_offset: be64(buf, footer_off::DATA_OFFSET),
        creator_app,
        current_size: be64(buf, footer_off::CURRENT_SIZE),
        chs: (u16::from_be_bytes([buf[56], buf[57]]), buf[58], buf[59]),
        disk_type,
        checksum_ok: checksum(&buf[..FOOTER_LEN], footer_off::CHECKSUM) == be32(buf, footer_off::CHECKSUM),
        unique_id,
    })
}

/// A parent locator entry: where one spelling of the parent's path is stored.
#[derive(Debug, Clone, Copy)]
pub struct Locator {
    /// Platform code, e.g. `W2ru` (relative UTF-16LE), `W2ku` (absolute), `Mac X` (URL).
    pub code: u32,
    /// Length of the path data in bytes.
    pub data_len: u32,
    /// File offset of the path data.
    pub data_offset: u64,
}

/// Platform code of a relative Windows path in UTF-16LE.
pub const PLAT_W2RU: u32 = u32::from_be_bytes(*b"W2ru");
/// Platform code of an absolute Windows path in UTF-16LE.
pub const PLAT_W2KU: u32 = u32::from_be_bytes(*b"W2ku");
/// Platform code of a `file://` URL in UTF-8 (Mac OS X).
pub const PLAT_MACX: u32 = u32::from_be_bytes(*b"MacX");

/// The dynamic disk header.
#[derive(Debug, Clone)]
pub struct DynHeader {
    /// File offset of the block allocation table.
    pub table_offset: u64,
    /// Number of BAT entries.
    pub max_table_entries: u32,
    /// Bytes per block (a power of two, at least one sector).
    pub block_size: u64,
    /// Unique ID the parent's footer must carry (differencing disks).
    pub parent_unique_id: [u8; 16],
    /// Parent file name as stored in the header (UTF-16BE).
    pub parent_name: String,
    /// Non-empty parent locator entries.
    pub locators: Vec<Locator>,
    /// Whether the stored checksum matches the bytes.
    pub checksum_ok: bool,
}

/// Parses the dynamic header at file offset `at`. A wrong checksum is only
/// recorded in `checksum_ok`; the fields are checked for sanity either way.
pub fn parse_dyn_header(buf: &[u8], at: u64) -> Result<DynHeader> {
    if buf.len() < DYN_HEADER_LEN || &buf[..8] != DYN_COOKIE {
        return Err(Error::corrupt("no VHD dynamic header cookie 'cxsparse'", at));
    }
    let block_size = u64::from(be32(buf, dyn_off::BLOCK_SIZE));
    let bs_at = at + dyn_off::BLOCK_SIZE as u64;
    check_limit("VHD block size", block_size, MAX_BLOCK_SIZE)?;
    if block_size < 512 || !block_size.is_power_of_two() {
        return Err(Error::corrupt(
            format!("VHD block size {block_size} is not a power of two of at least 512"),
            bs_at,
        ));
    }
    let mut parent_unique_id = [0u8; 16];
    parent_unique_id.copy_from_slice(&buf[40..56]);
    let locators = (0..8)
        .map(|i| {
            let o = dyn_off::LOCATORS + i * 24;
            Locator {
                code: be32(buf, o),
                data_len: be32(buf, o + 8),
                data_offset: be64(buf, o + 16),
            }
        })
        .filter(|l| l.code != 0 && l.data_len != 0)
        .collect();
    Ok(DynHeader {
        checksum_ok: checksum(&buf[..DYN_HEADER_LEN], dyn_off::CHECKSUM) == be32(buf, dyn_off::CHECKSUM),
        table_offset: be64(buf, dyn_off::TABLE_OFFSET),
        max_table_entries: be32(buf, dyn_off::MAX_TABLE_ENTRIES),
        block_size,
        parent_unique_id,
        parent_name: utf16_until_nul(&buf[64..576], true),
        locators,
    })
}

/// Decodes a locator's path data into a path string, or None for platforms
/// we cannot follow (old Mac aliases, ASCII Windows paths are tried as-is).
pub fn locator_path(code: u32, data: &[u8]) -> Option<String> {
    let s = match code {
        PLAT_W2RU | PLAT_W2KU => utf16_until_nul(data, false),
        PLAT_MACX => {
            let s = String::from_utf8_lossy(data);
            let s = s.trim_end_matches('\0');
            percent_decode(s.strip_prefix("file://").unwrap_or(s))
        }
        _ => return None,
    };
    (!s.is_empty()).then_some(s)
}

/// Undoes `%XX` escapes in a file URL path; malformed escapes stay as they are.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_skips_its_own_field() {
        let mut b = vec![1u8; 512];
        b[64..68].fill(0xff);
        assert_eq!(checksum(&b, 64), !508u32);
    }

    #[test]
    fn mac_url_is_decoded() {
        assert_eq!(
            locator_path(PLAT_MACX, b"file://./a%20b.vhd\0").as_deref(),
            Some("./a b.vhd")
        );
        assert_eq!(locator_path(PLAT_MACX, b"file://x%2").as_deref(), Some("x%2"));
    }

    #[test]
    fn block_size_cap() {
        let mut b = vec![0u8; DYN_HEADER_LEN];
        b[..8].copy_from_slice(DYN_COOKIE);
        b[32..36].copy_from_slice(&((MAX_BLOCK_SIZE as u32) * 2).to_be_bytes());
        let c = checksum(&b, 36);
        b[36..40].copy_from_slice(&c.to_be_bytes());
        assert!(matches!(
            parse_dyn_header(&b, 512),
            Err(Error::LimitExceeded {
                what: "VHD block size",
                ..
            })
        ));
    }
}
