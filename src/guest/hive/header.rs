//! On-disk structures of a regf hive: the base block, the hive bins, cells,
//! and the fixed fields of key (`nk`) and value (`vk`) cells.
//!
//! Cell offsets stored in the hive are relative to the first hive bin, which
//! starts right after the 4096-byte base block.

use v2x_formats::{Error, Result};

/// Size of the base block; hive bins start here.
pub const BASE_BLOCK_SIZE: usize = 4096;

/// Size of a hive bin header; cells start after it.
pub const HBIN_HEADER_SIZE: usize = 32;

/// Offset field value meaning "no cell".
pub const NO_CELL: u32 = 0xFFFF_FFFF;

/// nk flag: the name is stored as Latin-1 bytes, not UTF-16LE.
pub const KEY_COMP_NAME: u16 = 0x0020;

/// vk flag: the name is stored as Latin-1 bytes, not UTF-16LE.
pub const VALUE_COMP_NAME: u16 = 0x0001;

/// Facts from the base block (the hive header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseBlock {
    /// Primary sequence number (incremented before a write).
    pub primary_seq: u32,
    /// Secondary sequence number (set equal after a write completes).
    pub secondary_seq: u32,
    /// Format major version (always 1).
    pub major: u32,
    /// Format minor version (3 to 6; big data cells need 4 or more).
    pub minor: u32,
    /// Offset of the root key cell, relative to the first hive bin.
    pub root_cell: u32,
    /// Length of the hive bins data as the header says.
    pub hbins_size: u32,
    /// True when the stored checksum matches the first 508 bytes.
    pub checksum_ok: bool,
}

impl BaseBlock {
    /// True when a write was interrupted (the sequence numbers differ): the
    /// hive may need its transaction logs, which we do not replay.
    pub fn is_dirty(&self) -> bool {
        self.primary_seq != self.secondary_seq
    }
}

/// Little-endian u16 at `off` of `b`, if it is in range.
pub fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    let s = b.get(off..off.checked_add(2)?)?;
    Some(u16::from_le_bytes([s[0], s[1]]))
}

/// Little-endian u32 at `off` of `b`, if it is in range.
pub fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// The XOR-of-dwords checksum of the first 508 bytes, with the format's
/// two reserved results remapped.
pub fn checksum(block: &[u8]) -> u32 {
    let mut x = 0u32;
    for i in 0..127 {
        x ^= u32_at(block, i * 4).unwrap_or(0);
    }
    match x {
        0 => 1,
        0xFFFF_FFFF => 0xFFFF_FFFE,
        v => v,
    }
}

/// Parses the base block at the start of `data`.
pub fn parse_base_block(data: &[u8]) -> Result<BaseBlock> {
    if data.len() < BASE_BLOCK_SIZE {
        return Err(Error::corrupt(
            format!("hive is {} bytes, shorter than its base block", data.len()),
            0,
        ));
    }
    if &data[0..4] != b"regf" {
        return Err(Error::corrupt("hive base block signature is not \"regf\"", 0));
    }
    let f = |off| u32_at(data, off).unwrap_or(0);
    let major = f(20);
    if major != 1 {
        return Err(Error::unsupported(format!("hive format major version {major}")));
    }
    Ok(BaseBlock {
        primary_seq: f(4),
        secondary_seq: f(8),
        major,
        minor: f(24),
        root_cell: f(36),
        hbins_size: f(40),
        checksum_ok: checksum(data) == f(508),
    })
}

/// Walks the hive bins after the base block up to `end` (a file offset),
/// returning each bin's `(start, end)` file offsets.
pub fn scan_bins(data: &[u8], end: usize, max_bins: usize) -> Result<Vec<(usize, usize)>> {
    let mut bins = Vec::new();
    let mut pos = BASE_BLOCK_SIZE;
    while pos < end {
        if bins.len() >= max_bins {
            return Err(Error::LimitExceeded {
                what: "hive bins",
                value: bins.len() as u64 + 1,
                max: max_bins as u64,
            });
        }
        let sig = data.get(pos..pos + 4);
        if sig != Some(b"hbin") {
            // Windows may leave garbage after the last bin it wrote; bins
            // must be contiguous, so the hive ends here.
            if bins.is_empty() {
                return Err(Error::corrupt(
                    "first hive bin signature is not \"hbin\"",
                    pos as u64,
                ));
            }
            break;
        }
        let rel = u32_at(data, pos + 4).unwrap_or(0) as usize;
        if rel != pos - BASE_BLOCK_SIZE {
            return Err(Error::corrupt(
                format!(
                    "hive bin says it is at {rel:#x}, it is at {:#x}",
                    pos - BASE_BLOCK_SIZE
                ),
                pos as u64 + 4,
            ));
        }
        let size = u32_at(data, pos + 8).unwrap_or(0) as usize;
        if size < 4096 || size % 4096 != 0 || size > end - pos {
            return Err(Error::corrupt(
                format!("hive bin size {size:#x} is not a multiple of 4096 inside the hive"),
                pos as u64 + 8,
            ));
        }
        bins.push((pos, pos + size));
        pos += size;
    }
    Ok(bins)
}

/// The fixed part of a key node (`nk`) cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyNode {
    /// nk flags (`KEY_*`).
    pub flags: u16,
    /// Parent key cell.
    pub parent: u32,
    /// Number of (stable) subkeys.
    pub subkey_count: u32,
    /// Subkey list cell, or [`NO_CELL`].
    pub subkey_list: u32,
    /// Number of values.
    pub value_count: u32,
    /// Value list cell, or [`NO_CELL`].
    pub value_list: u32,
    /// Key name, decoded.
    pub name: String,
}

/// Parses an `nk` cell body found at file offset `at`.
pub fn parse_key_node(body: &[u8], at: u64) -> Result<KeyNode> {
    if body.get(0..2) != Some(b"nk") || body.len() < 76 {
        return Err(Error::corrupt("key cell is not an \"nk\" record", at));
    }
    let f = |off| u32_at(body, off).unwrap_or(0);
    let flags = u16_at(body, 2).unwrap_or(0);
    let name_len = usize::from(u16_at(body, 72).unwrap_or(0));
    let raw = body
        .get(76..76 + name_len)
        .ok_or_else(|| Error::corrupt(format!("key name of {name_len} bytes runs past its cell"), at))?;
    Ok(KeyNode {
        flags,
        parent: f(16),
        subkey_count: f(20),
        subkey_list: f(28),
        value_count: f(36),
        value_list: f(40),
        name: decode_name(raw, flags & KEY_COMP_NAME != 0),
    })
}

/// The fixed part of a value (`vk`) cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueKey {
    /// Value name, decoded ("" for the default value).
    pub name: String,
    /// Data length with the inline flag removed.
    pub data_len: u32,
    /// True when the data (at most 4 bytes) sits in the `data_cell` field itself.
    pub inline: bool,
    /// Data cell offset, or the inline data.
    pub data_cell: u32,
    /// Registry type (REG_*).
    pub data_type: u32,
}

/// Parses a `vk` cell body found at file offset `at`.
pub fn parse_value_key(body: &[u8], at: u64) -> Result<ValueKey> {
    if body.get(0..2) != Some(b"vk") || body.len() < 20 {
        return Err(Error::corrupt("value cell is not a \"vk\" record", at));
    }
    let name_len = usize::from(u16_at(body, 2).unwrap_or(0));
    let size = u32_at(body, 4).unwrap_or(0);
    let flags = u16_at(body, 16).unwrap_or(0);
    let raw = body
        .get(20..20 + name_len)
        .ok_or_else(|| Error::corrupt(format!("value name of {name_len} bytes runs past its cell"), at))?;
    Ok(ValueKey {
        name: decode_name(raw, flags & VALUE_COMP_NAME != 0),
        data_len: size & 0x7FFF_FFFF,
        inline: size & 0x8000_0000 != 0,
        data_cell: u32_at(body, 8).unwrap_or(0),
        data_type: u32_at(body, 12).unwrap_or(0),
    })
}

/// Decodes a key or value name: Latin-1 when `compressed`, else UTF-16LE.
pub fn decode_name(raw: &[u8], compressed: bool) -> String {
    if compressed {
        raw.iter().map(|&b| char::from(b)).collect()
    } else {
        utf16le(raw)
    }
}

/// Decodes UTF-16LE (an odd trailing byte is dropped, bad surrogates replaced).
pub fn utf16le(raw: &[u8]) -> String {
    let units = raw.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]));
    char::decode_utf16(units)
        .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect()
}
