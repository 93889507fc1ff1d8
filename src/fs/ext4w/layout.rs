//! Superblock and group descriptors: parsing, feature policy, and writing
//! them back with their checksums.

use super::csum::{crc16, crc32c_raw};
use v2x_formats::error::check_limit;
use v2x_formats::{Error, Result};

/// Byte offset of the primary superblock inside the filesystem.
pub const SB_OFFSET: u64 = 1024;
/// Size of the superblock.
pub const SB_SIZE: usize = 1024;
/// Most block groups we handle (32 TiB at 4 KiB blocks).
pub const MAX_GROUPS: u64 = 1 << 18;

// Feature bits we accept or refuse, from the ext4 on-disk format.
const COMPAT_SPARSE_SUPER2: u32 = 0x200;
const INCOMPAT_COMPRESSION: u32 = 0x1;
const INCOMPAT_FILETYPE: u32 = 0x2;
const INCOMPAT_RECOVER: u32 = 0x4;
const INCOMPAT_JOURNAL_DEV: u32 = 0x8;
const INCOMPAT_META_BG: u32 = 0x10;
const INCOMPAT_EXTENTS: u32 = 0x40;
const INCOMPAT_64BIT: u32 = 0x80;
const INCOMPAT_MMP: u32 = 0x100;
const INCOMPAT_FLEX_BG: u32 = 0x200;
const INCOMPAT_EA_INODE: u32 = 0x400;
const INCOMPAT_DIRDATA: u32 = 0x1000;
const INCOMPAT_CSUM_SEED: u32 = 0x2000;
const INCOMPAT_LARGEDIR: u32 = 0x4000;
const INCOMPAT_INLINE_DATA: u32 = 0x8000;
const INCOMPAT_ENCRYPT: u32 = 0x10000;
const INCOMPAT_CASEFOLD: u32 = 0x20000;
const RO_SPARSE_SUPER: u32 = 0x1;
const RO_LARGE_FILE: u32 = 0x2;
const RO_BTREE_DIR: u32 = 0x4;
const RO_HUGE_FILE: u32 = 0x8;
const RO_GDT_CSUM: u32 = 0x10;
const RO_DIR_NLINK: u32 = 0x20;
const RO_EXTRA_ISIZE: u32 = 0x40;
const RO_HAS_SNAPSHOT: u32 = 0x80;
const RO_QUOTA: u32 = 0x100;
const RO_BIGALLOC: u32 = 0x200;
const RO_METADATA_CSUM: u32 = 0x400;
const RO_REPLICA: u32 = 0x800;
const RO_READONLY: u32 = 0x1000;
const RO_PROJECT: u32 = 0x2000;
const RO_SHARED_BLOCKS: u32 = 0x4000;
const RO_VERITY: u32 = 0x8000;
const RO_ORPHAN_PRESENT: u32 = 0x10000;

/// Group descriptor flag: the inode bitmap and table are not initialised.
pub const BG_INODE_UNINIT: u16 = 0x1;
/// Group descriptor flag: the block bitmap is not initialised.
pub const BG_BLOCK_UNINIT: u16 = 0x2;

/// Little-endian field access on a byte buffer (offsets are our constants).
pub fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}
/// Reads a little-endian u32 at `off`.
pub fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}
/// Writes a little-endian u16 at `off`.
pub fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
/// Writes a little-endian u32 at `off`.
pub fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// The parsed superblock; `raw` is kept so unknown fields survive a rewrite.
#[derive(Debug, Clone)]
pub struct Superblock {
    raw: Vec<u8>,
    /// Filesystem block size in bytes.
    pub block_size: u64,
    /// Total blocks.
    pub blocks_count: u64,
    /// Total inodes.
    pub inodes_count: u32,
    /// Blocks per group.
    pub blocks_per_group: u32,
    /// Inodes per group.
    pub inodes_per_group: u32,
    /// Block number of the first group's start (1 for 1 KiB blocks, else 0).
    pub first_data_block: u32,
    /// On-disk inode record size.
    pub inode_size: u32,
    /// First non-reserved inode.
    pub first_ino: u32,
    /// Group descriptor size (32, or `s_desc_size` with `64bit`).
    pub desc_size: usize,
    /// Number of block groups.
    pub group_count: u32,
    /// `s_want_extra_isize` for new inodes.
    pub want_extra_isize: u16,
    /// crc32c seed of `metadata_csum` (from the UUID or `s_checksum_seed`).
    pub csum_seed: u32,
    /// Whether metadata carries crc32c checksums.
    pub metadata_csum: bool,
    /// Whether group descriptors carry the crc16 of `gdt_csum`.
    pub gdt_csum: bool,
    /// `64bit`: block numbers have high halves.
    pub is_64bit: bool,
    /// `extents` feature.
    pub extents: bool,
    /// `huge_file` feature (i_blocks high half, HUGE_FILE_FL).
    pub huge_file: bool,
    /// `filetype`: directory entries carry a type byte.
    pub filetype: bool,
    /// `dir_nlink`: directories may exceed 65000 links (count stuck at 1).
    pub dir_nlink: bool,
    /// `sparse_super`: backups only in groups 0, 1 and powers of 3, 5, 7.
    pub sparse_super: bool,
    /// `flex_bg` feature.
    pub flex_bg: bool,
    /// `s_hash_seed` of htree directories.
    pub hash_seed: [u32; 4],
    /// `s_def_hash_version`.
    pub def_hash_version: u8,
    /// Hash names with unsigned chars (`EXT2_FLAGS_UNSIGNED_HASH`).
    pub unsigned_hash: bool,
    /// Reserved GDT blocks after the descriptors in backup groups.
    pub reserved_gdt_blocks: u32,
}

impl Superblock {
    /// Parses and validates the superblock bytes (1024 of them), refusing
    /// features we cannot safely write.
    pub fn parse(raw: &[u8], device_size: u64) -> Result<Self> {
        let at = |o: usize| SB_OFFSET + o as u64;
        if raw.len() != SB_SIZE || le16(raw, 0x38) != 0xEF53 {
            return Err(Error::corrupt("ext superblock magic is not 0xEF53", at(0x38)));
        }
        let log = le32(raw, 0x18);
        if log > 6 {
            return Err(Error::corrupt(
                format!("block size log {log} is too large"),
                at(0x18),
            ));
        }
        let block_size = 1024u64 << log;
        let compat = le32(raw, 0x5C);
        let incompat = le32(raw, 0x60);
        let ro = le32(raw, 0x64);
        check_features(compat, incompat, ro)?;
        let state = le16(raw, 0x3A);
        if state & 2 != 0 {
            return Err(Error::unsupported(
                "ext4 filesystem is in the errors state; run e2fsck first",
            ));
        }
        if state & 1 == 0 {
            return Err(Error::unsupported(
                "ext4 filesystem was not cleanly unmounted; run e2fsck first",
            ));
        }
        let metadata_csum = ro & RO_METADATA_CSUM != 0;
        if metadata_csum {
            if raw[0x175] != 1 {
                return Err(Error::corrupt("unknown superblock checksum type", at(0x175)));
            }
            let want = crc32c_raw(!0, &raw[..0x3FC]);
            if le32(raw, 0x3FC) != want {
                return Err(Error::corrupt("superblock checksum mismatch", at(0x3FC)));
            }
        }
        let is_64bit = incompat & INCOMPAT_64BIT != 0;
        let mut blocks_count = u64::from(le32(raw, 0x4));
        if is_64bit {
            blocks_count |= u64::from(le32(raw, 0x150)) << 32;
        }
        let rev = le32(raw, 0x4C);
        let (inode_size, first_ino) = if rev == 0 {
            (128, 11)
        } else {
            (u32::from(le16(raw, 0x58)), le32(raw, 0x54))
        };
        if !(128..=block_size as u32).contains(&inode_size) || !inode_size.is_power_of_two() {
            return Err(Error::corrupt(format!("inode size {inode_size}"), at(0x58)));
        }
        let desc_size = if is_64bit {
            usize::from(le16(raw, 0xFE))
        } else {
            32
        };
        if is_64bit && (!(64..=1024).contains(&desc_size) || !desc_size.is_power_of_two()) {
            return Err(Error::corrupt(
                format!("group descriptor size {desc_size}"),
                at(0xFE),
            ));
        }
        let bpg = le32(raw, 0x20);
        let ipg = le32(raw, 0x28);
        let bits = block_size as u32 * 8;
        if bpg == 0 || bpg > bits || bpg % 8 != 0 {
            return Err(Error::corrupt(format!("{bpg} blocks per group"), at(0x20)));
        }
        if ipg == 0 || ipg > bits || ipg % 8 != 0 {
            return Err(Error::corrupt(format!("{ipg} inodes per group"), at(0x28)));
        }
        let first_data_block = le32(raw, 0x14);
        if u64::from(first_data_block) >= blocks_count || first_data_block > 1 {
            return Err(Error::corrupt("first data block", at(0x14)));
        }
        let groups = (blocks_count - u64::from(first_data_block)).div_ceil(u64::from(bpg));
        check_limit("ext4 block group count", groups, MAX_GROUPS)?;
        let inodes_count = le32(raw, 0x0);
        if u64::from(inodes_count) != groups * u64::from(ipg) {
            return Err(Error::corrupt(
                "inode count does not match the group count",
                at(0),
            ));
        }
        if blocks_count
            .checked_mul(block_size)
            .is_none_or(|end| end > device_size)
        {
            return Err(Error::corrupt("filesystem is larger than its device", at(0x4)));
        }
        if first_ino < 11 || first_ino >= inodes_count {
            return Err(Error::corrupt("first inode number", at(0x54)));
        }
        let uuid = &raw[0x68..0x78];
        let csum_seed = if incompat & INCOMPAT_CSUM_SEED != 0 {
            le32(raw, 0x270)
        } else {
            crc32c_raw(!0, uuid)
        };
        let hash_seed = [le32(raw, 0xEC), le32(raw, 0xF0), le32(raw, 0xF4), le32(raw, 0xF8)];
        Ok(Superblock {
            block_size,
            blocks_count,
            inodes_count,
            blocks_per_group: bpg,
            inodes_per_group: ipg,
            first_data_block,
            inode_size,
            first_ino,
            desc_size,
            group_count: groups as u32,
            want_extra_isize: if ro & RO_EXTRA_ISIZE != 0 {
                le16(raw, 0x15E).max(32)
            } else {
                32
            },
            csum_seed,
            metadata_csum,
            gdt_csum: !metadata_csum && ro & RO_GDT_CSUM != 0,
            is_64bit,
            extents: incompat & INCOMPAT_EXTENTS != 0,
            huge_file: ro & RO_HUGE_FILE != 0,
            filetype: incompat & INCOMPAT_FILETYPE != 0,
            dir_nlink: ro & RO_DIR_NLINK != 0,
            sparse_super: ro & RO_SPARSE_SUPER != 0,
            flex_bg: incompat & INCOMPAT_FLEX_BG != 0,
            hash_seed,
            def_hash_version: raw[0xFC],
            unsigned_hash: le32(raw, 0x160) & 0x2 != 0,
            reserved_gdt_blocks: u32::from(le16(raw, 0xCE)),
            raw: raw.to_vec(),
        })
    }

    /// Free block count in the superblock.
    pub fn free_blocks(&self) -> u64 {
        let mut v = u64::from(le32(&self.raw, 0xC));
        if self.is_64bit {
            v |= u64::from(le32(&self.raw, 0x158)) << 32;
        }
        v
    }

    /// Sets the superblock's free block count.
    pub fn set_free_blocks(&mut self, v: u64) {
        put32(&mut self.raw, 0xC, v as u32);
        if self.is_64bit {
            put32(&mut self.raw, 0x158, (v >> 32) as u32);
        }
    }

    /// Free inode count in the superblock.
    pub fn free_inodes(&self) -> u32 {
        le32(&self.raw, 0x10)
    }

    /// Sets the superblock's free inode count.
    pub fn set_free_inodes(&mut self, v: u32) {
        put32(&mut self.raw, 0x10, v);
    }

    /// Superblock bytes with a fresh checksum, ready to write at [`SB_OFFSET`].
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.raw.clone();
        if self.metadata_csum {
            let c = crc32c_raw(!0, &out[..0x3FC]);
            put32(&mut out, 0x3FC, c);
        }
        out
    }

    /// Byte offset of group descriptor `g` in the primary table.
    pub fn desc_offset(&self, g: u32) -> u64 {
        (u64::from(self.first_data_block) + 1) * self.block_size + u64::from(g) * self.desc_size as u64
    }

    /// First block of group `g`.
    pub fn group_first_block(&self, g: u32) -> u64 {
        u64::from(self.first_data_block) + u64::from(g) * u64::from(self.blocks_per_group)
    }

    /// Number of blocks in group `g` (the last one may be short).
    pub fn group_blocks(&self, g: u32) -> u64 {
        let start = self.group_first_block(g);
        (self.blocks_count - start).min(u64::from(self.blocks_per_group))
    }

    /// Whether group `g` holds a superblock backup (and a GDT copy).
    pub fn has_super(&self, g: u32) -> bool {
        if g <= 1 || !self.sparse_super {
            return true;
        }
        [3u32, 5, 7].iter().any(|&base| {
            let mut p = base;
            while p < g {
                p = p.saturating_mul(base);
            }
            p == g
        })
    }

    /// Blocks taken by the group descriptor table.
    pub fn gdt_blocks(&self) -> u64 {
        (u64::from(self.group_count) * self.desc_size as u64).div_ceil(self.block_size)
    }
}

/// Refuses the features v2x cannot write safely, naming them.
fn check_features(compat: u32, incompat: u32, ro: u32) -> Result<()> {
    let refuse = |what: &str| {
        Err(Error::unsupported(format!(
            "ext4 feature {what} (cannot write safely)"
        )))
    };
    if incompat & INCOMPAT_RECOVER != 0 {
        return Err(Error::unsupported("ext4 journal needs recovery; cannot write"));
    }
    if ro & RO_ORPHAN_PRESENT != 0 {
        return Err(Error::unsupported(
            "ext4 orphan file has entries (needs recovery); cannot write",
        ));
    }
    let incompat_named = [
        (INCOMPAT_COMPRESSION, "compression"),
        (INCOMPAT_JOURNAL_DEV, "journal_dev"),
        (INCOMPAT_META_BG, "meta_bg"),
        (INCOMPAT_MMP, "mmp"),
        (INCOMPAT_EA_INODE, "ea_inode"),
        (INCOMPAT_DIRDATA, "dirdata"),
        (INCOMPAT_INLINE_DATA, "inline_data"),
        (INCOMPAT_ENCRYPT, "encrypt"),
        (INCOMPAT_CASEFOLD, "casefold"),
    ];
    for (bit, name) in incompat_named {
        if incompat & bit != 0 {
            return refuse(name);
        }
    }
    let ro_named = [
        (RO_HAS_SNAPSHOT, "has_snapshot"),
        (RO_QUOTA, "quota"),
        (RO_BIGALLOC, "bigalloc"),
        (RO_REPLICA, "replica"),
        (RO_READONLY, "read-only"),
        (RO_SHARED_BLOCKS, "shared_blocks"),
        (RO_VERITY, "verity"),
    ];
    for (bit, name) in ro_named {
        if ro & bit != 0 {
            return refuse(name);
        }
    }
    if compat & COMPAT_SPARSE_SUPER2 != 0 {
        return refuse("sparse_super2");
    }
    let known_incompat = INCOMPAT_FILETYPE
        | INCOMPAT_EXTENTS
        | INCOMPAT_64BIT
        | INCOMPAT_FLEX_BG
        | INCOMPAT_CSUM_SEED
        | INCOMPAT_LARGEDIR;
    if incompat & !known_incompat != 0 {
        return refuse(&format!("incompat {:#x}", incompat & !known_incompat));
    }
    let known_ro = RO_SPARSE_SUPER
        | RO_LARGE_FILE
        | RO_BTREE_DIR
        | RO_HUGE_FILE
        | RO_GDT_CSUM
        | RO_DIR_NLINK
        | RO_EXTRA_ISIZE
        | RO_METADATA_CSUM
        | RO_PROJECT;
    if ro & !known_ro != 0 {
        return refuse(&format!("ro_compat {:#x}", ro & !known_ro));
    }
    Ok(())
}

/// One group descriptor, kept raw (`desc_size` bytes).
#[derive(Debug, Clone)]
pub struct GroupDesc {
    raw: Vec<u8>,
    wide: bool,
}

impl GroupDesc {
    /// Wraps descriptor bytes; `wide` when the descriptor has 64-bit halves.
    pub fn new(raw: Vec<u8>) -> Self {
        let wide = raw.len() >= 64;
        GroupDesc { raw, wide }
    }

    fn lohi32(&self, lo: usize, hi: usize) -> u64 {
        let mut v = u64::from(le32(&self.raw, lo));
        if self.wide {
            v |= u64::from(le32(&self.raw, hi)) << 32;
        }
        v
    }

    fn lohi16(&self, lo: usize, hi: usize) -> u32 {
        let mut v = u32::from(le16(&self.raw, lo));
        if self.wide {
            v |= u32::from(le16(&self.raw, hi)) << 16;
        }
        v
    }

    fn set_lohi16(&mut self, lo: usize, hi: usize, v: u32) {
        put16(&mut self.raw, lo, v as u16);
        if self.wide {
            put16(&mut self.raw, hi, (v >> 16) as u16);
        }
    }

    /// Block number of the block bitmap.
    pub fn block_bitmap(&self) -> u64 {
        self.lohi32(0x0, 0x20)
    }
    /// Block number of the inode bitmap.
    pub fn inode_bitmap(&self) -> u64 {
        self.lohi32(0x4, 0x24)
    }
    /// First block of the inode table.
    pub fn inode_table(&self) -> u64 {
        self.lohi32(0x8, 0x28)
    }
    /// Free blocks in the group.
    pub fn free_blocks(&self) -> u32 {
        self.lohi16(0xC, 0x2C)
    }
    /// Sets the free block count.
    pub fn set_free_blocks(&mut self, v: u32) {
        self.set_lohi16(0xC, 0x2C, v)
    }
    /// Free inodes in the group.
    pub fn free_inodes(&self) -> u32 {
        self.lohi16(0xE, 0x2E)
    }
    /// Sets the free inode count.
    pub fn set_free_inodes(&mut self, v: u32) {
        self.set_lohi16(0xE, 0x2E, v)
    }
    /// Directories in the group.
    pub fn used_dirs(&self) -> u32 {
        self.lohi16(0x10, 0x30)
    }
    /// Sets the directory count.
    pub fn set_used_dirs(&mut self, v: u32) {
        self.set_lohi16(0x10, 0x30, v)
    }
    /// `bg_flags`.
    pub fn flags(&self) -> u16 {
        le16(&self.raw, 0x12)
    }
    /// Sets `bg_flags`.
    pub fn set_flags(&mut self, v: u16) {
        put16(&mut self.raw, 0x12, v)
    }
    /// Inodes at the end of the table never used (`bg_itable_unused`).
    pub fn itable_unused(&self) -> u32 {
        self.lohi16(0x1C, 0x32)
    }
    /// Sets `bg_itable_unused`.
    pub fn set_itable_unused(&mut self, v: u32) {
        self.set_lohi16(0x1C, 0x32, v)
    }
    /// Stores the block bitmap checksum (`metadata_csum`).
    pub fn set_block_bitmap_csum(&mut self, c: u32) {
        self.set_lohi16(0x18, 0x38, c)
    }
    /// Stores the inode bitmap checksum (`metadata_csum`).
    pub fn set_inode_bitmap_csum(&mut self, c: u32) {
        self.set_lohi16(0x1A, 0x3A, c)
    }
    /// The stored descriptor checksum.
    pub fn checksum(&self) -> u16 {
        le16(&self.raw, 0x1E)
    }

    /// The checksum this descriptor should carry as group `g` of `sb`
    /// (0 when the filesystem has no descriptor checksums).
    pub fn compute_checksum(&self, sb: &Superblock, g: u32) -> u16 {
        let gle = g.to_le_bytes();
        if sb.metadata_csum {
            let mut tmp = self.raw.clone();
            put16(&mut tmp, 0x1E, 0);
            let c = crc32c_raw(sb.csum_seed, &gle);
            (crc32c_raw(c, &tmp) & 0xFFFF) as u16
        } else if sb.gdt_csum {
            let mut c = crc16(!0, &sb.raw[0x68..0x78]);
            c = crc16(c, &gle);
            c = crc16(c, &self.raw[..0x1E]);
            if self.raw.len() > 0x20 {
                c = crc16(c, &self.raw[0x20..]);
            }
            c
        } else {
            0
        }
    }

    /// Descriptor bytes with a fresh checksum, for group `g`.
    pub fn to_bytes(&self, sb: &Superblock, g: u32) -> Vec<u8> {
        let mut out = self.raw.clone();
        let c = self.compute_checksum(sb, g);
        put16(&mut out, 0x1E, c);
        out
    }
}

impl Superblock {
    /// Blocks one group's inode table takes.
    pub fn itable_blocks(&self) -> u64 {
        (u64::from(self.inodes_per_group) * u64::from(self.inode_size)).div_ceil(self.block_size)
    }
}

impl GroupDesc {
    /// Whether the stored block bitmap checksum matches `c` (16 or 32 bits).
    pub fn block_bitmap_csum_matches(&self, c: u32) -> bool {
        let mask = if self.wide { u32::MAX } else { 0xFFFF };
        self.lohi16(0x18, 0x38) == c & mask
    }

    /// Whether the stored inode bitmap checksum matches `c` (16 or 32 bits).
    pub fn inode_bitmap_csum_matches(&self, c: u32) -> bool {
        let mask = if self.wide { u32::MAX } else { 0xFFFF };
        self.lohi16(0x1A, 0x3A) == c & mask
    }
}
