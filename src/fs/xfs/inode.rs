//! Inode cores (v1/v2 on v4 filesystems, v3 on v5) and their data forks.

use super::sb::{be16, be32, be64, Superblock};
use crate::fs::FileType;
use v2x_formats::{Error, Result};

/// "IN".
const INODE_MAGIC: u16 = 0x494e;
/// Size of a v1/v2 inode core; the data fork follows it.
const CORE_V2: usize = 100;
/// Size of a v3 inode core.
const CORE_V3: usize = 176;
/// `di_flags`: the data lives on the realtime device.
const DIFLAG_REALTIME: u16 = 0x0001;
/// `di_flags2`: 64-bit data fork extent counter at byte 24.
const DIFLAG2_NREXT64: u64 = 1 << 4;

/// How a fork stores its contents (`di_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForkFormat {
    /// Device number only (device nodes, FIFOs, sockets).
    Dev,
    /// Contents inline in the inode (short directories, short symlinks).
    Local,
    /// An array of extent records in the inode.
    Extents,
    /// The root of a block-mapping btree in the inode.
    Btree,
}

/// One inode, parsed and checked; `fork` holds the raw data fork bytes.
#[derive(Debug, Clone)]
pub struct Inode {
    /// Inode number.
    pub ino: u64,
    /// Byte offset of the inode in the volume (for error reports).
    pub offset: u64,
    /// Type and permission bits.
    pub mode: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Number of data fork extents the inode claims.
    pub nextents: u64,
    /// Data fork format.
    pub format: ForkFormat,
    /// Data lives on the realtime device (which we do not have).
    pub realtime: bool,
    /// The data fork bytes (literal area up to the attribute fork).
    pub fork: Vec<u8>,
    /// Byte offset of `fork` in the volume.
    pub fork_offset: u64,
}

impl Inode {
    /// Parses inode `ino`, whose `sb.inode_size` bytes at volume offset `offset` are `raw`.
    pub fn parse(sb: &Superblock, ino: u64, offset: u64, raw: &[u8]) -> Result<Self> {
        let bad = |what: String, at: u64| Error::corrupt(format!("XFS inode {ino}: {what}"), offset + at);
        if raw.len() < usize::from(sb.inode_size) || raw.len() < CORE_V3 {
            return Err(bad("inode buffer is short".into(), 0));
        }
        if be16(raw, 0) != INODE_MAGIC {
            return Err(bad("bad inode magic".into(), 0));
        }
        let version = raw[4];
        let core = match (sb.is_v5(), version) {
            (true, 3) => CORE_V3,
            (false, 1 | 2) => CORE_V2,
            _ => {
                return Err(bad(
                    format!("inode version {version} on a v{} filesystem", sb.version),
                    4,
                ))
            }
        };
        if core == CORE_V3 && be64(raw, 152) != ino {
            return Err(bad(format!("inode records number {}", be64(raw, 152)), 152));
        }
        let format = match raw[5] {
            0 => ForkFormat::Dev,
            1 => ForkFormat::Local,
            2 => ForkFormat::Extents,
            3 => ForkFormat::Btree,
            f => {
                return Err(Error::unsupported(format!(
                    "XFS inode {ino}: data fork format {f}"
                )))
            }
        };
        let size = be64(raw, 56);
        if size > i64::MAX as u64 {
            return Err(bad(format!("size {size}"), 56));
        }
        let flags2 = if core == CORE_V3 { be64(raw, 120) } else { 0 };
        let nextents = if flags2 & DIFLAG2_NREXT64 != 0 {
            be64(raw, 24)
        } else {
            u64::from(be32(raw, 76))
        };
        let literal = usize::from(sb.inode_size) - core;
        let forkoff = usize::from(raw[82]) * 8;
        let fork_len = if forkoff == 0 { literal } else { forkoff };
        if fork_len > literal {
            return Err(bad(
                format!("attribute fork offset {forkoff} lies past the inode"),
                82,
            ));
        }
        Ok(Inode {
            ino,
            offset,
            mode: be16(raw, 2),
            uid: be32(raw, 8),
            gid: be32(raw, 12),
            size,
            nextents,
            format,
            realtime: be16(raw, 90) & DIFLAG_REALTIME != 0,
            fork: raw[core..core + fork_len].to_vec(),
            fork_offset: offset + core as u64,
        })
    }

    /// The object type from the mode bits.
    pub fn file_type(&self) -> FileType {
        file_type_of_mode(self.mode)
    }
}

/// The object type of Unix mode bits.
pub fn file_type_of_mode(mode: u16) -> FileType {
    match mode & 0o170000 {
        0o100000 => FileType::File,
        0o040000 => FileType::Dir,
        0o120000 => FileType::Symlink,
        _ => FileType::Other,
    }
}
