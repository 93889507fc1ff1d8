//! Item payloads of the fs and root trees: inodes, directory entries,
//! file extents, roots and root references.

use super::sb::{le16, le32, le64};
use super::tree::Key;
use crate::fs::FileType;
use v2x_formats::{Error, Result};

/// Item type numbers.
pub mod ty {
    /// Inode item.
    pub const INODE_ITEM: u8 = 1;
    /// Inode back reference (name in the parent directory).
    pub const INODE_REF: u8 = 12;
    /// Directory entry keyed by name hash.
    pub const DIR_ITEM: u8 = 84;
    /// Directory entry keyed by insertion index.
    pub const DIR_INDEX: u8 = 96;
    /// File extent.
    pub const EXTENT_DATA: u8 = 108;
    /// Root of a tree.
    pub const ROOT_ITEM: u8 = 132;
    /// Subvolume → parent link.
    pub const ROOT_BACKREF: u8 = 144;
}

/// Size of an inode item.
pub const INODE_ITEM_SIZE: usize = 160;
const DIR_ITEM_HEADER: usize = 30;
const EXTENT_HEADER: usize = 21;
const EXTENT_REGULAR_SIZE: usize = EXTENT_HEADER + 32;
/// Root items before the v2 fields were added are this long.
const ROOT_ITEM_MIN: usize = 239;

/// The fields of an inode item we report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inode {
    /// File size (link length for symlinks).
    pub size: u64,
    /// Link count.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Mode bits including the type.
    pub mode: u32,
}

impl Inode {
    /// Parses an inode item.
    pub fn parse(b: &[u8], at: u64) -> Result<Self> {
        if b.len() < INODE_ITEM_SIZE {
            return Err(Error::corrupt("btrfs inode item truncated", at));
        }
        Ok(Self {
            size: le64(b, 16),
            nlink: le32(b, 40),
            uid: le32(b, 44),
            gid: le32(b, 48),
            mode: le32(b, 52),
        })
    }

    /// The object type from the mode bits.
    pub fn file_type(&self) -> FileType {
        match self.mode & 0o170000 {
            0o100000 => FileType::File,
            0o040000 => FileType::Dir,
            0o120000 => FileType::Symlink,
            _ => FileType::Other,
        }
    }
}

/// One directory entry of a DIR_ITEM or DIR_INDEX item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirItem {
    /// What the entry points at: an INODE_ITEM key in the same tree, or a
    /// ROOT_ITEM key of a subvolume.
    pub location: Key,
    /// Raw entry type (1 file, 2 dir, 7 symlink, ...).
    pub kind: u8,
    /// The name bytes.
    pub name: Vec<u8>,
}

impl DirItem {
    /// The entry type as a [`FileType`].
    pub fn file_type(&self) -> FileType {
        match self.kind {
            1 => FileType::File,
            2 => FileType::Dir,
            7 => FileType::Symlink,
            _ => FileType::Other,
        }
    }
}

/// Parses every entry packed in one DIR_ITEM/DIR_INDEX item (several names
/// share an item when their hashes collide).
pub fn parse_dir_items(b: &[u8], at: u64) -> Result<Vec<DirItem>> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < b.len() {
        let here = at + pos as u64;
        let Some(h) = b.get(pos..pos + DIR_ITEM_HEADER) else {
            return Err(Error::corrupt("btrfs dir item header truncated", here));
        };
        let data_len = le16(h, 25) as usize;
        let name_len = le16(h, 27) as usize;
        let start = pos + DIR_ITEM_HEADER;
        let Some(name) = b.get(start..start + name_len) else {
            return Err(Error::corrupt("btrfs dir item name overruns its item", here));
        };
        if name_len == 0 {
            return Err(Error::corrupt("btrfs dir item with an empty name", here));
        }
        out.push(DirItem {
            location: Key::parse(h),
            kind: h[29],
            name: name.to_vec(),
        });
        pos = start + name_len + data_len;
    }
    Ok(out)
}

/// btrfs's directory name hash (crc32c seeded with ~1, no final inversion).
pub fn name_hash(name: &[u8]) -> u64 {
    // crc32c_append inverts on entry and exit; undo both to get the raw form.
    u64::from(!crc32c::crc32c_append(!0xffff_fffe_u32, name))
}

/// Compression of an extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Stored as is.
    None,
    /// zlib stream.
    Zlib,
    /// btrfs's segmented LZO.
    Lzo,
    /// zstd frame.
    Zstd,
}

/// Where a file extent's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtentBody {
    /// Bytes stored in the leaf (possibly compressed).
    Inline(Vec<u8>),
    /// Bytes stored at a logical address. `disk_bytenr == 0` is a hole.
    Regular {
        /// Logical address of the (possibly compressed) extent on disk.
        disk_bytenr: u64,
        /// Bytes on disk.
        disk_num_bytes: u64,
        /// Offset into the decompressed extent where this file range starts.
        offset: u64,
    },
    /// Allocated but never written: reads as zeros.
    Prealloc,
}

/// One EXTENT_DATA item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileExtent {
    /// Decompressed size of the whole extent.
    pub ram_bytes: u64,
    /// Compression.
    pub compression: Compression,
    /// Bytes of the file this item covers (for inline: the decompressed length).
    pub num_bytes: u64,
    /// Where the bytes are.
    pub body: ExtentBody,
}

impl FileExtent {
    /// Parses an EXTENT_DATA item.
    pub fn parse(b: &[u8], at: u64) -> Result<Self> {
        if b.len() < EXTENT_HEADER {
            return Err(Error::corrupt("btrfs file extent item truncated", at));
        }
        let ram_bytes = le64(b, 8);
        let compression = match b[16] {
            0 => Compression::None,
            1 => Compression::Zlib,
            2 => Compression::Lzo,
            3 => Compression::Zstd,
            c => {
                return Err(Error::corrupt(
                    format!("btrfs file extent compression type {c} is unknown"),
                    at + 16,
                ))
            }
        };
        if b[17] != 0 || le16(b, 18) != 0 {
            return Err(Error::unsupported("btrfs encrypted or encoded file extents"));
        }
        match b[20] {
            0 => {
                let data = b[EXTENT_HEADER..].to_vec();
                let num_bytes = if compression == Compression::None {
                    data.len() as u64
                } else {
                    ram_bytes
                };
                Ok(Self {
                    ram_bytes,
                    compression,
                    num_bytes,
                    body: ExtentBody::Inline(data),
                })
            }
            t @ (1 | 2) => {
                if b.len() < EXTENT_REGULAR_SIZE {
                    return Err(Error::corrupt("btrfs regular file extent item truncated", at));
                }
                let body = if t == 2 {
                    ExtentBody::Prealloc
                } else {
                    ExtentBody::Regular {
                        disk_bytenr: le64(b, 21),
                        disk_num_bytes: le64(b, 29),
                        offset: le64(b, 37),
                    }
                };
                Ok(Self {
                    ram_bytes,
                    compression,
                    num_bytes: le64(b, 45),
                    body,
                })
            }
            t => Err(Error::corrupt(
                format!("btrfs file extent type {t} is unknown"),
                at + 20,
            )),
        }
    }
}

/// The fields of a ROOT_ITEM we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootItem {
    /// Directory inode at the top of the tree (256).
    pub root_dirid: u64,
    /// Logical address of the top node.
    pub bytenr: u64,
    /// Level of the top node.
    pub level: u8,
    /// Subvolume flags (bit 0: read-only).
    pub flags: u64,
}

impl RootItem {
    /// Parses a ROOT_ITEM.
    pub fn parse(b: &[u8], at: u64) -> Result<Self> {
        if b.len() < ROOT_ITEM_MIN {
            return Err(Error::corrupt("btrfs root item truncated", at));
        }
        Ok(Self {
            root_dirid: le64(b, 168),
            bytenr: le64(b, 176),
            level: b[238],
            flags: le64(b, 208),
        })
    }

    /// True for a read-only subvolume.
    pub fn read_only(&self) -> bool {
        self.flags & 1 != 0
    }
}

/// A ROOT_REF/ROOT_BACKREF payload, or an INODE_REF entry: a name in directory `dirid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameRef {
    /// Directory holding the name (for INODE_REF, taken from the key offset).
    pub dirid: u64,
    /// The name.
    pub name: Vec<u8>,
}

/// Parses a ROOT_REF or ROOT_BACKREF item.
pub fn parse_root_ref(b: &[u8], at: u64) -> Result<NameRef> {
    let name_len = le16(b, 16) as usize;
    match b.get(18..18 + name_len) {
        Some(name) if b.len() >= 18 && name_len > 0 => Ok(NameRef {
            dirid: le64(b, 0),
            name: name.to_vec(),
        }),
        _ => Err(Error::corrupt("btrfs root ref truncated", at)),
    }
}

/// Parses the first name of an INODE_REF item whose key offset is `parent`.
pub fn parse_inode_ref(b: &[u8], parent: u64, at: u64) -> Result<NameRef> {
    let name_len = le16(b, 8) as usize;
    match b.get(10..10 + name_len) {
        Some(name) if b.len() >= 10 && name_len > 0 => Ok(NameRef {
            dirid: parent,
            name: name.to_vec(),
        }),
        _ => Err(Error::corrupt("btrfs inode ref truncated", at)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_hash_matches_btrfs() {
        // The "default" DIR_ITEM of every btrfs root tree is keyed (6 DIR_ITEM 2378154706).
        assert_eq!(name_hash(b"default"), 2378154706);
    }

    #[test]
    fn colliding_names_in_one_item_are_all_returned() {
        let mut b = Vec::new();
        for name in [&b"a"[..], b"bc"] {
            let mut h = [0u8; DIR_ITEM_HEADER];
            h[0..8].copy_from_slice(&257u64.to_le_bytes());
            h[8] = ty::INODE_ITEM;
            h[27..29].copy_from_slice(&(name.len() as u16).to_le_bytes());
            h[29] = 1;
            b.extend_from_slice(&h);
            b.extend_from_slice(name);
        }
        let items = parse_dir_items(&b, 0).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].name, b"bc");
        assert!(parse_dir_items(&b[..b.len() - 1], 0).is_err());
    }
}
