//! The XFS superblock (sector 0 of allocation group 0) and the geometry it
//! gives: how inode and block numbers turn into byte offsets.

use v2x_formats::{Error, Result};

/// "XFSB".
const SB_MAGIC: u32 = 0x5846_5342;
/// Low nibble of `sb_versionnum`.
const VERSION_MASK: u16 = 0x000f;
/// v4: directories are version 2 (the only kind we read).
const VERSION_DIRV2: u16 = 0x2000;
/// v4: `sb_features2` is valid.
const VERSION_MOREBITS: u16 = 0x8000;
/// v4 `sb_features2`: directory entries carry a file type byte.
const FEATURES2_FTYPE: u32 = 0x0200;
/// v5 incompat: directory entries carry a file type byte.
const INCOMPAT_FTYPE: u32 = 0x01;
/// v5 incompat: sparse inode chunks (only affects allocation, not lookup).
const INCOMPAT_SPINODES: u32 = 0x02;
/// v5 incompat: metadata blocks carry `sb_meta_uuid`, not `sb_uuid`.
const INCOMPAT_META_UUID: u32 = 0x04;
/// v5 incompat: 64-bit timestamps (we do not report times).
const INCOMPAT_BIGTIME: u32 = 0x08;
/// v5 incompat: xfs_repair must run before mounting; readable as is.
const INCOMPAT_NEEDSREPAIR: u32 = 0x10;
/// v5 incompat: 64-bit data fork extent counters in the inode.
const INCOMPAT_NREXT64: u32 = 0x20;
/// Incompatible features this reader understands.
const INCOMPAT_KNOWN: u32 = INCOMPAT_FTYPE
    | INCOMPAT_SPINODES
    | INCOMPAT_META_UUID
    | INCOMPAT_BIGTIME
    | INCOMPAT_NEEDSREPAIR
    | INCOMPAT_NREXT64;

/// Largest filesystem block XFS allows (64 KiB).
pub const MAX_BLOCK_SIZE: u32 = 65536;
/// Largest directory block XFS allows (64 KiB).
pub const MAX_DIR_BLOCK_SIZE: u32 = 65536;

/// The superblock fields the reader needs, checked for consistency.
#[derive(Debug, Clone)]
pub struct Superblock {
    /// 4 or 5.
    pub version: u8,
    /// Filesystem block size in bytes.
    pub block_size: u32,
    /// log2 of `block_size`.
    pub block_log: u8,
    /// Blocks in the data section.
    pub dblocks: u64,
    /// Blocks per allocation group.
    pub ag_blocks: u32,
    /// Number of allocation groups.
    pub ag_count: u32,
    /// Bits of an AG-relative block number (ceil(log2(ag_blocks))).
    pub ag_blk_log: u8,
    /// Inode size in bytes.
    pub inode_size: u16,
    /// log2 of inodes per block.
    pub inopb_log: u8,
    /// Root directory inode.
    pub root_ino: u64,
    /// Directory block size in bytes.
    pub dir_block_size: u32,
    /// Directory entries carry a file type.
    pub has_ftype: bool,
    /// The user-visible UUID.
    pub uuid: [u8; 16],
    /// Label, NUL-trimmed.
    pub label: Vec<u8>,
    /// The NEEDSREPAIR flag: xfs_repair must run before the kernel mounts it.
    pub needs_repair: bool,
}

/// Big-endian u16 at `at`; 0 past the end (callers check lengths first).
pub(super) fn be16(b: &[u8], at: usize) -> u16 {
    b.get(at..at.saturating_add(2))
        .map_or(0, |s| u16::from_be_bytes([s[0], s[1]]))
}

/// Big-endian u32 at `at`; 0 past the end (callers check lengths first).
pub(super) fn be32(b: &[u8], at: usize) -> u32 {
    b.get(at..at.saturating_add(4))
        .map_or(0, |s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Big-endian u64 at `at`; 0 past the end (callers check lengths first).
pub(super) fn be64(b: &[u8], at: usize) -> u64 {
    b.get(at..at.saturating_add(8)).map_or(0, |s| {
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        u64::from_be_bytes(a)
    })
}

impl Superblock {
    /// Bytes of the superblock we parse.
    pub const SIZE: usize = 264;

    /// Parses and checks the superblock at byte 0 of the volume.
    pub fn parse(b: &[u8]) -> Result<Self> {
        if b.len() < Self::SIZE {
            return Err(Error::corrupt("XFS superblock is truncated", 0));
        }
        if be32(b, 0) != SB_MAGIC {
            return Err(Error::corrupt("bad XFS superblock magic", 0));
        }
        let versionnum = be16(b, 100);
        let version = (versionnum & VERSION_MASK) as u8;
        let bad = |what: &str, off: u64| Err(Error::corrupt(format!("XFS superblock: {what}"), off));
        let mut needs_repair = false;
        let has_ftype = match version {
            4 => {
                if versionnum & VERSION_DIRV2 == 0 {
                    return Err(Error::unsupported("XFS v4 with version 1 directories"));
                }
                versionnum & VERSION_MOREBITS != 0 && be32(b, 200) & FEATURES2_FTYPE != 0
            }
            5 => {
                let incompat = be32(b, 216);
                if incompat & !INCOMPAT_KNOWN != 0 {
                    return Err(Error::unsupported(format!(
                        "XFS incompatible features {:#x}",
                        incompat & !INCOMPAT_KNOWN
                    )));
                }
                needs_repair = incompat & INCOMPAT_NEEDSREPAIR != 0;
                incompat & INCOMPAT_FTYPE != 0
            }
            _ => return bad(&format!("version {version} is neither 4 nor 5"), 100),
        };
        let block_size = be32(b, 4);
        let block_log = b[120];
        if !(512..=MAX_BLOCK_SIZE).contains(&block_size)
            || !block_size.is_power_of_two()
            || u32::from(block_log) >= 32
            || 1u32 << block_log != block_size
        {
            return bad(&format!("block size {block_size} (log {block_log})"), 4);
        }
        let inode_size = be16(b, 104);
        let inode_log = b[122];
        let min_inode = if version == 5 { 512 } else { 256 };
        if !(min_inode..=2048).contains(&inode_size)
            || !inode_size.is_power_of_two()
            || u32::from(inode_log) >= 16
            || 1u16 << inode_log != inode_size
            || u32::from(inode_size) > block_size
        {
            return bad(&format!("inode size {inode_size} (log {inode_log})"), 104);
        }
        let inopb_log = b[123];
        if u32::from(block_log) != u32::from(inode_log) + u32::from(inopb_log) {
            return bad(&format!("inodes per block log {inopb_log}"), 123);
        }
        let ag_blocks = be32(b, 84);
        let ag_count = be32(b, 88);
        let ag_blk_log = b[124];
        if ag_blocks < 2 || ag_count == 0 || ag_blk_log > 31 {
            return bad(&format!("{ag_count} AGs of {ag_blocks} blocks"), 84);
        }
        // ag_blk_log is log2 of ag_blocks rounded up.
        if (1u64 << ag_blk_log) < u64::from(ag_blocks) || (1u64 << ag_blk_log) >= 2 * u64::from(ag_blocks) {
            return bad(&format!("AG block log {ag_blk_log} for {ag_blocks} blocks"), 124);
        }
        let dblocks = be64(b, 8);
        if dblocks > u64::from(ag_blocks) * u64::from(ag_count) {
            return bad(&format!("{dblocks} blocks do not fit in the AGs"), 8);
        }
        let dir_log = b[192];
        let dir_block_size = u64::from(block_size) << dir_log.min(16);
        if dir_log > 16 || dir_block_size > u64::from(MAX_DIR_BLOCK_SIZE) {
            return bad(&format!("directory block log {dir_log}"), 192);
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[32..48]);
        let label: Vec<u8> = b[108..120].iter().copied().take_while(|&c| c != 0).collect();
        let sb = Superblock {
            version,
            block_size,
            block_log,
            dblocks,
            ag_blocks,
            ag_count,
            ag_blk_log,
            inode_size,
            inopb_log,
            root_ino: be64(b, 56),
            dir_block_size: dir_block_size as u32,
            has_ftype,
            uuid,
            label,
            needs_repair,
        };
        sb.inode_offset(sb.root_ino)
            .map_err(|_| Error::corrupt(format!("XFS root inode {} is out of range", sb.root_ino), 56))?;
        Ok(sb)
    }

    /// True for v5 (CRC) filesystems, whose metadata blocks have longer headers.
    pub fn is_v5(&self) -> bool {
        self.version == 5
    }

    /// Byte offset of filesystem block `fsb` (AG number in the high bits).
    pub fn fsb_offset(&self, fsb: u64) -> Result<u64> {
        let agno = fsb >> self.ag_blk_log;
        let agbno = fsb & ((1u64 << self.ag_blk_log) - 1);
        if agno >= u64::from(self.ag_count) || agbno >= u64::from(self.ag_blocks) {
            return Err(Error::corrupt(
                format!("XFS block number {fsb:#x} lies outside the filesystem"),
                0,
            ));
        }
        let block = agno * u64::from(self.ag_blocks) + agbno;
        if block >= self.dblocks {
            return Err(Error::corrupt(
                format!("XFS block number {fsb:#x} lies past the last block"),
                0,
            ));
        }
        Ok(block << self.block_log)
    }

    /// Checks that `count` blocks starting at `fsb` stay inside one AG.
    pub fn check_run(&self, fsb: u64, count: u64) -> bool {
        let agno = fsb >> self.ag_blk_log;
        let agbno = fsb & ((1u64 << self.ag_blk_log) - 1);
        let linear_end = (agno * u64::from(self.ag_blocks))
            .saturating_add(agbno)
            .saturating_add(count);
        agno < u64::from(self.ag_count)
            && agbno
                .checked_add(count)
                .is_some_and(|end| end <= u64::from(self.ag_blocks))
            && linear_end <= self.dblocks
    }

    /// Byte offset of inode `ino`.
    pub fn inode_offset(&self, ino: u64) -> Result<u64> {
        let agino_bits = u32::from(self.ag_blk_log) + u32::from(self.inopb_log);
        if agino_bits >= 64 {
            return Err(Error::corrupt("XFS inode number geometry", 0));
        }
        let agno = ino >> agino_bits;
        let agino = ino & ((1u64 << agino_bits) - 1);
        let agbno = agino >> self.inopb_log;
        let slot = agino & ((1u64 << self.inopb_log) - 1);
        if agno >= u64::from(self.ag_count) || agbno >= u64::from(self.ag_blocks) {
            return Err(Error::not_found(format!(
                "XFS inode {ino} (outside the filesystem)"
            )));
        }
        let block = agno * u64::from(self.ag_blocks) + agbno;
        Ok((block << self.block_log) + slot * u64::from(self.inode_size))
    }

    /// The UUID as blkid prints it.
    pub fn uuid_string(&self) -> String {
        let h: String = self.uuid.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }
}
