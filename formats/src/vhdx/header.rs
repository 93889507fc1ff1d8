//! On-disk structures of VHDX: the two headers, the region table and the
//! metadata items. All fields are little-endian; GUIDs are stored in the
//! Windows mixed-endian layout.

use crate::error::{check_limit, Error, Result};
use crate::vhd::runs::{utf16_until_nul, ReadAt};

/// File offset of header 1 (header 2 follows 64 KiB later).
pub const HEADER1_AT: u64 = 64 << 10;
/// File offset of header 2.
pub const HEADER2_AT: u64 = 128 << 10;
/// Bytes covered by a header's checksum.
pub const HEADER_LEN: usize = 4096;
/// File offset of region table 1 (table 2 follows 64 KiB later).
pub const REGION1_AT: u64 = 192 << 10;
/// File offset of region table 2.
pub const REGION2_AT: u64 = 256 << 10;
/// Bytes covered by a region table's checksum, and of the metadata table.
pub const TABLE_LEN: usize = 64 << 10;
/// Most region table entries the format allows.
pub const MAX_REGION_ENTRIES: u64 = 2047;
/// Most metadata table entries the format allows.
pub const MAX_METADATA_ENTRIES: u64 = 2047;
/// Largest metadata item we read (the parent locator is the only big one).
pub const MAX_METADATA_ITEM_LEN: u64 = 1 << 20;
/// Largest disk the format allows (64 TiB).
pub const MAX_DISK_SIZE: u64 = 64 << 40;

/// Byte offsets of header fields, for mutation tests.
pub mod header_off {
    /// CRC-32C of the 4 KiB header (u32).
    pub const CHECKSUM: usize = 4;
    /// Sequence number (u64).
    pub const SEQUENCE: usize = 8;
    /// Log GUID: all zero when the log is empty.
    pub const LOG_GUID: usize = 48;
    /// Version (u16, must be 1).
    pub const VERSION: usize = 66;
    /// Log length (u32).
    pub const LOG_LENGTH: usize = 68;
    /// Log offset (u64).
    pub const LOG_OFFSET: usize = 72;
}

/// A GUID in its on-disk byte order.
pub type Guid = [u8; 16];

/// Converts a GUID's text form into its on-disk bytes.
pub const fn guid(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Guid {
    let a = d1.to_le_bytes();
    let b = d2.to_le_bytes();
    let c = d3.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4], d4[5], d4[6],
        d4[7],
    ]
}

/// Region holding the BAT.
pub const BAT_REGION: Guid = guid(
    0x2dc2_7766,
    0xf623,
    0x4200,
    [0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08],
);
/// Region holding the metadata table and items.
pub const METADATA_REGION: Guid = guid(
    0x8b7c_a206,
    0x4790,
    0x4b9a,
    [0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e],
);
/// Metadata item: block size and flags.
pub const FILE_PARAMETERS: Guid = guid(
    0xcaa1_6737,
    0xfa36,
    0x4d43,
    [0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b],
);
/// Metadata item: guest size.
pub const VIRTUAL_DISK_SIZE: Guid = guid(
    0x2fa5_4224,
    0xcd1b,
    0x4876,
    [0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8],
);
/// Metadata item: the disk's identity (what a child's parent_linkage names).
pub const VIRTUAL_DISK_ID: Guid = guid(
    0xbeca_12ab,
    0xb2e6,
    0x4523,
    [0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46],
);
/// Metadata item: logical sector size.
pub const LOGICAL_SECTOR_SIZE: Guid = guid(
    0x8141_bf1d,
    0xa96f,
    0x4709,
    [0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f],
);
/// Metadata item: physical sector size.
pub const PHYSICAL_SECTOR_SIZE: Guid = guid(
    0xcda3_48c7,
    0x445d,
    0x4471,
    [0x9c, 0xc9, 0xe9, 0x88, 0x52, 0x51, 0xc5, 0x56],
);
/// Metadata item: parent locator of a differencing disk.
pub const PARENT_LOCATOR: Guid = guid(
    0xa8d3_5f2d,
    0xb30b,
    0x454d,
    [0xab, 0xf7, 0xd3, 0xd8, 0x48, 0x34, 0xab, 0x0c],
);
/// Parent locator type of a VHDX parent.
pub const VHDX_LOCATOR_TYPE: Guid = guid(
    0xb04a_efb7,
    0xd19e,
    0x4a81,
    [0xb7, 0x89, 0x25, 0xb8, 0xe9, 0x44, 0x59, 0x13],
);

pub(crate) fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
pub(crate) fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
pub(crate) fn le64(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}
pub(crate) fn guid_at(b: &[u8], o: usize) -> Guid {
    let mut g = [0u8; 16];
    g.copy_from_slice(&b[o..o + 16]);
    g
}

/// CRC-32C of `buf` with the 4-byte checksum field at `at` taken as zero.
pub fn crc32c_without(buf: &[u8], at: usize) -> u32 {
    let c = crc32c::crc32c(&buf[..at]);
    let c = crc32c::crc32c_append(c, &[0; 4]);
    crc32c::crc32c_append(c, &buf[at + 4..])
}

/// The fields of the active header that the reader needs.
#[derive(Debug, Clone)]
pub struct Header {
    /// Sequence number; the valid header with the highest one is current.
    pub sequence: u64,
    /// Changes whenever guest data is written; a child's parent_linkage names it.
    pub data_write_guid: Guid,
    /// Non-zero when the log may hold entries to replay.
    pub log_guid: Guid,
    /// Length of the log in bytes.
    pub log_length: u32,
    /// File offset of the log.
    pub log_offset: u64,
}

fn parse_header(b: &[u8]) -> Option<Header> {
    if &b[..4] != b"head"
        || crc32c_without(&b[..HEADER_LEN], 4) != le32(b, 4)
        || le16(b, header_off::VERSION) != 1
    {
        return None;
    }
    Some(Header {
        sequence: le64(b, header_off::SEQUENCE),
        data_write_guid: guid_at(b, 32),
        log_guid: guid_at(b, header_off::LOG_GUID),
        log_length: le32(b, header_off::LOG_LENGTH),
        log_offset: le64(b, header_off::LOG_OFFSET),
    })
}

/// Reads both headers and returns the valid one with the highest sequence number.
pub fn read_header(file: &dyn ReadAt) -> Result<Header> {
    let mut best: Option<Header> = None;
    for at in [HEADER1_AT, HEADER2_AT] {
        let mut b = vec![0u8; HEADER_LEN];
        if file.read_exact_at(at, &mut b).is_err() {
            continue;
        }
        if let Some(h) = parse_header(&b) {
            if best.as_ref().is_none_or(|x| h.sequence > x.sequence) {
                best = Some(h);
            }
        }
    }
    best.ok_or_else(|| {
        Error::corrupt(
            "neither VHDX header is valid (signature, CRC-32C or version)",
            HEADER1_AT,
        )
    })
}

/// One region table entry.
#[derive(Debug, Clone, Copy)]
pub struct Region {
    /// File offset (1 MiB aligned).
    pub offset: u64,
    /// Length in bytes.
    pub length: u32,
}

/// The BAT and metadata regions.
#[derive(Debug, Clone, Copy)]
pub struct Regions {
    /// Where the BAT is.
    pub bat: Region,
    /// Where the metadata table is.
    pub metadata: Region,
}

/// Reads the first valid region table; unknown required regions are unsupported.
pub fn read_regions(file: &dyn ReadAt) -> Result<Regions> {
    let mut last_err = None;
    for at in [REGION1_AT, REGION2_AT] {
        let mut b = vec![0u8; TABLE_LEN];
        if let Err(e) = file.read_exact_at(at, &mut b) {
            last_err = Some(e);
            continue;
        }
        if &b[..4] != b"regi" || crc32c_without(&b, 4) != le32(&b, 4) {
            last_err = Some(Error::corrupt(
                "VHDX region table signature or CRC-32C is wrong",
                at,
            ));
            continue;
        }
        let count = u64::from(le32(&b, 8));
        check_limit("VHDX region table entries", count, MAX_REGION_ENTRIES)?;
        let (mut bat, mut meta) = (None, None);
        for i in 0..count as usize {
            let o = 16 + i * 32;
            let id = guid_at(&b, o);
            let r = Region {
                offset: le64(&b, o + 16),
                length: le32(&b, o + 24),
            };
            let required = le32(&b, o + 28) & 1 != 0;
            if id == BAT_REGION {
                bat = Some(r);
            } else if id == METADATA_REGION {
                meta = Some(r);
            } else if required {
                return Err(Error::unsupported(format!(
                    "VHDX region {} is marked required and v2x does not know it",
                    fmt_guid(&id)
                )));
            }
        }
        return match (bat, meta) {
            (Some(bat), Some(metadata)) => Ok(Regions { bat, metadata }),
            _ => Err(Error::corrupt(
                "VHDX region table lacks the BAT or metadata region",
                at,
            )),
        };
    }
    Err(last_err.unwrap_or_else(|| Error::corrupt("no valid VHDX region table", REGION1_AT)))
}

/// Formats a GUID in its usual text form.
pub fn fmt_guid(g: &Guid) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{}",
        le32(g, 0),
        le16(g, 4),
        le16(g, 6),
        g[8],
        g[9],
        g[10..].iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// What the metadata region says about the disk.
#[derive(Debug, Clone)]
pub struct Metadata {
    /// Payload block size (1 MiB to 256 MiB, power of two).
    pub block_size: u64,
    /// Blocks stay allocated (a fixed VHDX).
    pub leave_allocated: bool,
    /// The disk is differencing.
    pub has_parent: bool,
    /// Guest size.
    pub disk_size: u64,
    /// Logical sector size (512 or 4096).
    pub logical_sector: u32,
    /// Physical sector size (512 or 4096).
    pub physical_sector: u32,
    /// This disk's identity.
    pub disk_id: Option<Guid>,
    /// Parent locator key/value pairs (differencing disks).
    pub parent_locator: Vec<(String, String)>,
}

/// Reads the metadata table and the items the reader needs.
pub fn read_metadata(file: &dyn ReadAt, region: Region) -> Result<Metadata> {
    let at = region.offset;
    if (region.length as usize) < TABLE_LEN {
        return Err(Error::corrupt(
            "VHDX metadata region is smaller than its table",
            REGION1_AT,
        ));
    }
    let mut t = vec![0u8; TABLE_LEN];
    file.read_exact_at(at, &mut t)?;
    if &t[..8] != b"metadata" {
        return Err(Error::corrupt("VHDX metadata table signature is wrong", at));
    }
    let count = u64::from(le16(&t, 10));
    check_limit("VHDX metadata entries", count, MAX_METADATA_ENTRIES)?;
    let mut md = Metadata {
        block_size: 0,
        leave_allocated: false,
        has_parent: false,
        disk_size: 0,
        logical_sector: 0,
        physical_sector: 0,
        disk_id: None,
        parent_locator: Vec::new(),
    };
    let (mut have_params, mut have_size) = (false, false);
    for i in 0..count as usize {
        let o = 32 + i * 32;
        let id = guid_at(&t, o);
        let off = u64::from(le32(&t, o + 16));
        let len = u64::from(le32(&t, o + 20));
        let required = le32(&t, o + 24) & 4 != 0;
        let entry_at = at + o as u64;
        check_limit("VHDX metadata item length", len, MAX_METADATA_ITEM_LEN)?;
        if off.checked_add(len).is_none_or(|e| e > u64::from(region.length)) {
            return Err(Error::corrupt(
                "VHDX metadata item lies outside its region",
                entry_at,
            ));
        }
        let known = [
            FILE_PARAMETERS,
            VIRTUAL_DISK_SIZE,
            VIRTUAL_DISK_ID,
            LOGICAL_SECTOR_SIZE,
            PHYSICAL_SECTOR_SIZE,
            PARENT_LOCATOR,
        ];
        if !known.contains(&id) {
            if required {
                return Err(Error::unsupported(format!(
                    "VHDX metadata item {} is marked required and v2x does not know it",
                    fmt_guid(&id)
                )));
            }
            continue;
        }
        let min = if id == VIRTUAL_DISK_ID {
            16
        } else if id == VIRTUAL_DISK_SIZE || id == FILE_PARAMETERS {
            8
        } else {
            4
        };
        if len < min {
            return Err(Error::corrupt("VHDX metadata item is too short", entry_at));
        }
        let v = file.read_table(at + off, len, "VHDX metadata item")?;
        if id == FILE_PARAMETERS {
            md.block_size = u64::from(le32(&v, 0));
            md.leave_allocated = le32(&v, 4) & 1 != 0;
            md.has_parent = le32(&v, 4) & 2 != 0;
            have_params = true;
        } else if id == VIRTUAL_DISK_SIZE {
            md.disk_size = le64(&v, 0);
            have_size = true;
        } else if id == VIRTUAL_DISK_ID {
            md.disk_id = Some(guid_at(&v, 0));
        } else if id == LOGICAL_SECTOR_SIZE {
            md.logical_sector = le32(&v, 0);
        } else if id == PHYSICAL_SECTOR_SIZE {
            md.physical_sector = le32(&v, 0);
        } else {
            md.parent_locator = parse_parent_locator(&v, at + off)?;
        }
    }
    if !have_params || !have_size || md.logical_sector == 0 {
        return Err(Error::corrupt(
            "VHDX metadata lacks file parameters, disk size or logical sector size",
            at,
        ));
    }
    let bs = md.block_size;
    if !(1 << 20..=256 << 20).contains(&bs) || !bs.is_power_of_two() {
        return Err(Error::corrupt(
            format!("VHDX block size {bs} is not a power of two in 1..256 MiB"),
            at,
        ));
    }
    if md.logical_sector != 512 && md.logical_sector != 4096 {
        return Err(Error::corrupt(
            format!("VHDX logical sector size {}", md.logical_sector),
            at,
        ));
    }
    check_limit("VHDX disk size", md.disk_size, MAX_DISK_SIZE)?;
    Ok(md)
}

/// Parses the key/value pairs of a parent locator item at file offset `at`.
fn parse_parent_locator(v: &[u8], at: u64) -> Result<Vec<(String, String)>> {
    if v.len() < 20 || guid_at(v, 0) != VHDX_LOCATOR_TYPE {
        return Err(Error::unsupported("VHDX parent locator of an unknown type"));
    }
    let count = usize::from(le16(v, 18));
    let mut out = Vec::new();
    for i in 0..count {
        let o = 20 + i * 12;
        let Some(e) = v.get(o..o + 12) else {
            return Err(Error::corrupt("VHDX parent locator entries overrun the item", at));
        };
        let s = |off: u32, len: u16| -> Result<String> {
            let (off, len) = (off as usize, usize::from(len));
            v.get(off..off.saturating_add(len))
                .map(|b| utf16_until_nul(b, false))
                .ok_or_else(|| Error::corrupt("VHDX parent locator string overruns the item", at))
        };
        out.push((s(le32(e, 0), le16(e, 8))?, s(le32(e, 4), le16(e, 10))?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_text_round_trip() {
        assert_eq!(fmt_guid(&BAT_REGION), "2dc27766-f623-4200-9d64-115e9bfd4a08");
        assert_eq!(&BAT_REGION[..4], &[0x66, 0x77, 0xc2, 0x2d]);
    }

    #[test]
    fn header_crc_is_checked() {
        let mut b = vec![0u8; HEADER_LEN];
        b[..4].copy_from_slice(b"head");
        b[header_off::VERSION] = 1;
        let c = crc32c_without(&b, 4);
        b[4..8].copy_from_slice(&c.to_le_bytes());
        assert!(parse_header(&b).is_some());
        b[100] = 1;
        assert!(parse_header(&b).is_none());
    }
}
