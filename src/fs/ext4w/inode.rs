//! Inode records: field access on the raw bytes (so fields we do not know
//! survive), and the `metadata_csum` inode checksum.

use super::csum::crc32c_raw;
use super::layout::{le16, le32, put16, put32, Superblock};

/// Inode flag: directory uses a hashed b-tree index.
pub const INDEX_FL: u32 = 0x1000;
/// Inode flag: i_blocks counts filesystem blocks, not 512-byte sectors.
pub const HUGE_FILE_FL: u32 = 0x40000;
/// Inode flag: i_block holds an extent tree.
pub const EXTENTS_FL: u32 = 0x80000;
/// Inode flag: data lives inside the inode.
pub const INLINE_DATA_FL: u32 = 0x1000_0000;

/// File type bits of `i_mode`.
pub const S_IFMT: u16 = 0o170000;
/// Regular file.
pub const S_IFREG: u16 = 0o100000;
/// Directory.
pub const S_IFDIR: u16 = 0o040000;
/// Symbolic link.
pub const S_IFLNK: u16 = 0o120000;

/// Offset of the checksum's high half, inside the extra fields.
const CSUM_HI: usize = 0x82;

/// One inode record, `inode_size` bytes.
#[derive(Debug, Clone)]
pub struct Inode {
    /// Inode number.
    pub ino: u32,
    /// The raw record.
    pub raw: Vec<u8>,
}

impl Inode {
    /// `i_mode`.
    pub fn mode(&self) -> u16 {
        le16(&self.raw, 0x0)
    }
    /// Sets `i_mode`.
    pub fn set_mode(&mut self, m: u16) {
        put16(&mut self.raw, 0x0, m)
    }
    /// File type bits.
    pub fn kind(&self) -> u16 {
        self.mode() & S_IFMT
    }
    /// Owner uid (low and high halves).
    pub fn uid(&self) -> u32 {
        u32::from(le16(&self.raw, 0x2)) | (u32::from(le16(&self.raw, 0x78)) << 16)
    }
    /// Group gid (low and high halves).
    pub fn gid(&self) -> u32 {
        u32::from(le16(&self.raw, 0x18)) | (u32::from(le16(&self.raw, 0x7A)) << 16)
    }
    /// Sets uid and gid.
    pub fn set_owner(&mut self, uid: u32, gid: u32) {
        put16(&mut self.raw, 0x2, uid as u16);
        put16(&mut self.raw, 0x78, (uid >> 16) as u16);
        put16(&mut self.raw, 0x18, gid as u16);
        put16(&mut self.raw, 0x7A, (gid >> 16) as u16);
    }
    /// File size in bytes.
    pub fn size(&self) -> u64 {
        u64::from(le32(&self.raw, 0x4)) | (u64::from(le32(&self.raw, 0x6C)) << 32)
    }
    /// Sets the file size.
    pub fn set_size(&mut self, s: u64) {
        put32(&mut self.raw, 0x4, s as u32);
        put32(&mut self.raw, 0x6C, (s >> 32) as u32);
    }
    /// Hard link count.
    pub fn links(&self) -> u16 {
        le16(&self.raw, 0x1A)
    }
    /// Sets the link count.
    pub fn set_links(&mut self, n: u16) {
        put16(&mut self.raw, 0x1A, n)
    }
    /// `i_flags`.
    pub fn flags(&self) -> u32 {
        le32(&self.raw, 0x20)
    }
    /// Sets `i_flags`.
    pub fn set_flags(&mut self, f: u32) {
        put32(&mut self.raw, 0x20, f)
    }
    /// The 60-byte `i_block` area (extent root, block map or fast symlink).
    pub fn i_block(&self) -> &[u8] {
        &self.raw[0x28..0x64]
    }
    /// Mutable `i_block`.
    pub fn i_block_mut(&mut self) -> &mut [u8] {
        &mut self.raw[0x28..0x64]
    }
    /// `i_generation`.
    pub fn generation(&self) -> u32 {
        le32(&self.raw, 0x64)
    }
    /// Extended attribute block, if any.
    pub fn file_acl(&self) -> u64 {
        u64::from(le32(&self.raw, 0x68)) | (u64::from(le16(&self.raw, 0x76)) << 32)
    }
    /// `i_extra_isize` (0 for 128-byte inodes).
    pub fn extra_isize(&self) -> usize {
        if self.raw.len() > 128 {
            usize::from(le16(&self.raw, 0x80))
        } else {
            0
        }
    }

    /// Sets `i_blocks` from a count of filesystem blocks.
    pub fn set_fs_blocks(&mut self, sb: &Superblock, blocks: u64) {
        let sectors = blocks.saturating_mul(sb.block_size / 512);
        let mut flags = self.flags() & !HUGE_FILE_FL;
        let value = if sb.huge_file && sectors >= 1 << 48 {
            flags |= HUGE_FILE_FL;
            blocks
        } else {
            sectors
        };
        self.set_flags(flags);
        put32(&mut self.raw, 0x1C, value as u32);
        if sb.huge_file {
            put16(&mut self.raw, 0x74, (value >> 32) as u16);
        }
    }

    /// Sets ctime, mtime (and atime when `all`) to `secs`, with nanosecond
    /// extra fields where the record has room.
    pub fn touch(&mut self, secs: i64, nanos: u32, all: bool) {
        let extra = (nanos << 2) | (((secs >> 32) & 3) as u32);
        let mut fields = vec![(0xC, 0x84), (0x10, 0x88)];
        if all {
            fields.push((0x8, 0x8C));
        }
        for (base, ext) in fields {
            put32(&mut self.raw, base, secs as u32);
            if self.extra_isize() >= ext + 4 - 0x80 {
                put32(&mut self.raw, ext, extra);
            }
        }
        if all && self.extra_isize() >= 0x98 - 0x80 {
            put32(&mut self.raw, 0x90, secs as u32);
            put32(&mut self.raw, 0x94, extra);
        }
    }

    /// Sets only the change time (chmod, chown, rename, link count).
    pub fn touch_ctime(&mut self, secs: i64, nanos: u32) {
        put32(&mut self.raw, 0xC, secs as u32);
        if self.extra_isize() >= 8 {
            put32(&mut self.raw, 0x84, (nanos << 2) | (((secs >> 32) & 3) as u32));
        }
    }

    /// Sets `i_dtime` (deletion time).
    pub fn set_dtime(&mut self, secs: u32) {
        put32(&mut self.raw, 0x14, secs)
    }

    /// Seed for checksums of blocks owned by this inode (extent blocks,
    /// directory blocks).
    pub fn csum_seed(&self, sb: &Superblock) -> u32 {
        let c = crc32c_raw(sb.csum_seed, &self.ino.to_le_bytes());
        crc32c_raw(c, &self.generation().to_le_bytes())
    }

    fn has_csum_hi(&self) -> bool {
        self.extra_isize() >= CSUM_HI + 2 - 0x80
    }

    /// The `metadata_csum` checksum of the record.
    pub fn compute_checksum(&self, sb: &Superblock) -> u32 {
        let mut tmp = self.raw.clone();
        put16(&mut tmp, 0x7C, 0);
        if self.has_csum_hi() {
            put16(&mut tmp, CSUM_HI, 0);
        }
        crc32c_raw(self.csum_seed(sb), &tmp)
    }

    /// Record bytes with a fresh checksum (when the fs has `metadata_csum`).
    pub fn to_bytes(&self, sb: &Superblock) -> Vec<u8> {
        let mut out = self.raw.clone();
        if sb.metadata_csum {
            let c = self.compute_checksum(sb);
            put16(&mut out, 0x7C, c as u16);
            if self.has_csum_hi() {
                put16(&mut out, CSUM_HI, (c >> 16) as u16);
            }
        }
        out
    }

    /// Whether the stored checksum matches.
    pub fn checksum_ok(&self, sb: &Superblock) -> bool {
        if !sb.metadata_csum {
            return true;
        }
        let c = self.compute_checksum(sb);
        let lo_ok = le16(&self.raw, 0x7C) == c as u16;
        let hi_ok = !self.has_csum_hi() || le16(&self.raw, CSUM_HI) == (c >> 16) as u16;
        lo_ok && hi_ok
    }

    /// A fresh record for inode `ino`: zeroed, with `i_extra_isize` set.
    pub fn new(sb: &Superblock, ino: u32, generation: u32) -> Self {
        let mut raw = vec![0u8; sb.inode_size as usize];
        put32(&mut raw, 0x64, generation);
        if raw.len() > 128 {
            let extra = usize::from(sb.want_extra_isize).min(raw.len() - 128);
            put16(&mut raw, 0x80, extra as u16);
        }
        Inode { ino, raw }
    }
}
