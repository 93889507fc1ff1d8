//! The VDI header (format version 1.1). All fields are little-endian.

use crate::error::{check_limit, Error, Result};

/// Bytes of header we read: the 64-byte banner plus the 384-byte v1.1 header.
pub const HEADER_LEN: usize = 0x40 + 0x180;
/// Smallest v1.1 header size that holds every field we use.
const MIN_HEADER_SIZE: u32 = 0x188 - 0x40;
/// Signature at offset 0x40.
pub const SIGNATURE: u32 = 0xbeda_107f;
/// The only version we read (1.1).
pub const VERSION_1_1: u32 = 0x0001_0001;
/// Largest block size we accept (VirtualBox always writes 1 MiB).
pub const MAX_BLOCK_SIZE: u64 = 64 << 20;
/// Largest per-block extra data we accept.
pub const MAX_BLOCK_EXTRA: u64 = 1 << 20;
/// Largest guest size we accept.
pub const MAX_DISK_SIZE: u64 = 64 << 40;

/// Byte offsets of header fields, for mutation tests.
pub mod off {
    /// Signature (u32).
    pub const SIGNATURE: usize = 0x40;
    /// Version (u32, major << 16 | minor).
    pub const VERSION: usize = 0x44;
    /// Size of the header after the banner (u32).
    pub const HEADER_SIZE: usize = 0x48;
    /// Image type (u32): 1 dynamic, 2 static, 3 undo, 4 differencing.
    pub const IMAGE_TYPE: usize = 0x4c;
    /// File offset of the block map (u32).
    pub const BLOCKS_OFFSET: usize = 0x154;
    /// File offset of the first data block (u32).
    pub const DATA_OFFSET: usize = 0x158;
    /// Guest size (u64).
    pub const DISK_SIZE: usize = 0x170;
    /// Block size (u32).
    pub const BLOCK_SIZE: usize = 0x178;
    /// Extra bytes before each block's data (u32).
    pub const BLOCK_EXTRA: usize = 0x17c;
    /// Number of blocks in the disk (u32).
    pub const BLOCKS: usize = 0x180;
}

/// Dynamic or static: the two kinds we read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageType {
    /// Blocks allocated on write ("normal").
    Dynamic,
    /// All blocks allocated at creation ("fixed").
    Static,
}

/// The fields the reader needs.
#[derive(Debug, Clone)]
pub struct Header {
    /// Dynamic or static.
    pub image_type: ImageType,
    /// File offset of the block map.
    pub blocks_offset: u64,
    /// File offset of block 0 of the data area.
    pub data_offset: u64,
    /// Guest size.
    pub disk_size: u64,
    /// Bytes per block.
    pub block_size: u64,
    /// Bytes of extra data before each block.
    pub block_extra: u64,
    /// Number of block map entries.
    pub blocks: u64,
}

fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

/// Parses and checks the header.
pub fn parse(b: &[u8]) -> Result<Header> {
    if b.len() < HEADER_LEN || le32(b, off::SIGNATURE) != SIGNATURE {
        return Err(Error::corrupt("no VDI signature", off::SIGNATURE as u64));
    }
    let v = le32(b, off::VERSION);
    if v != VERSION_1_1 {
        return Err(Error::unsupported(format!(
            "VDI version {}.{} (v2x reads version 1.1)",
            v >> 16,
            v & 0xffff
        )));
    }
    if le32(b, off::HEADER_SIZE) < MIN_HEADER_SIZE {
        return Err(Error::corrupt(
            "VDI header size is too small",
            off::HEADER_SIZE as u64,
        ));
    }
    let image_type = match le32(b, off::IMAGE_TYPE) {
        1 => ImageType::Dynamic,
        2 => ImageType::Static,
        3 | 4 => {
            return Err(Error::unsupported(
                "VDI undo/differencing images (they name their parent only by UUID)",
            ))
        }
        t => {
            return Err(Error::corrupt(
                format!("VDI image type {t}"),
                off::IMAGE_TYPE as u64,
            ))
        }
    };
    let mut size = [0u8; 8];
    size.copy_from_slice(&b[off::DISK_SIZE..off::DISK_SIZE + 8]);
    let h = Header {
        image_type,
        blocks_offset: u64::from(le32(b, off::BLOCKS_OFFSET)),
        data_offset: u64::from(le32(b, off::DATA_OFFSET)),
        disk_size: u64::from_le_bytes(size),
        block_size: u64::from(le32(b, off::BLOCK_SIZE)),
        block_extra: u64::from(le32(b, off::BLOCK_EXTRA)),
        blocks: u64::from(le32(b, off::BLOCKS)),
    };
    check_limit("VDI disk size", h.disk_size, MAX_DISK_SIZE)?;
    check_limit("VDI block size", h.block_size, MAX_BLOCK_SIZE)?;
    check_limit("VDI block extra data", h.block_extra, MAX_BLOCK_EXTRA)?;
    if h.block_size < 512 || !h.block_size.is_power_of_two() {
        return Err(Error::corrupt(
            format!(
                "VDI block size {} is not a power of two of at least 512",
                h.block_size
            ),
            off::BLOCK_SIZE as u64,
        ));
    }
    if h.blocks.saturating_mul(h.block_size) < h.disk_size {
        return Err(Error::corrupt(
            format!(
                "VDI has {} blocks of {} bytes, too few for {} bytes",
                h.blocks, h.block_size, h.disk_size
            ),
            off::BLOCKS as u64,
        ));
    }
    Ok(h)
}
