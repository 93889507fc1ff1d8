//! The btrfs superblock: where the trees start, the sector and node sizes,
//! the bootstrap chunk array, and the checks that decide whether we trust it.

use v2x_formats::block::BlockSource;
use v2x_formats::{Error, Result};

/// Byte offset of the primary superblock.
pub const SUPER_OFFSET: u64 = 0x10000;
/// Size of the superblock structure on disk.
pub const SUPER_SIZE: usize = 4096;
/// The magic at superblock byte 0x40.
pub const MAGIC: &[u8; 8] = b"_BHRfS_M";
/// Largest tree node btrfs allows (64 KiB).
pub const MAX_NODE_SIZE: u32 = 64 * 1024;
/// Largest sector size we accept (btrfs uses 4 KiB up to the page size, 64 KiB).
pub const MAX_SECTOR_SIZE: u32 = 64 * 1024;
/// Size of the bootstrap chunk array inside the superblock.
pub const SYS_CHUNK_ARRAY_MAX: usize = 2048;

const CSUM_CRC32C: u16 = 0;
/// incompat flag: the tree headers carry `metadata_uuid` instead of the fsid.
const INCOMPAT_METADATA_UUID: u64 = 1 << 10;
/// incompat flags we understand well enough to read the filesystem
/// (mixed backref, default subvol, mixed groups, compress lzo/zstd,
/// big metadata, extended iref, raid56 (refused per chunk), skinny metadata,
/// no holes, metadata uuid, raid1c34, zoned is refused, extent tree v2 is refused).
const INCOMPAT_KNOWN: u64 = 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x20 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x800;

/// Little-endian field readers that never panic: a field outside `b` reads as
/// zero, and callers check lengths first so that never happens on valid input.
pub fn le16(b: &[u8], off: usize) -> u16 {
    b.get(off..off + 2)
        .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}

/// See [`le16`].
pub fn le32(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// See [`le16`].
pub fn le64(b: &[u8], off: usize) -> u64 {
    b.get(off..off + 8).map_or(0, |s| {
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        u64::from_le_bytes(a)
    })
}

/// The fields of the superblock that the reader uses.
#[derive(Debug, Clone)]
pub struct Superblock {
    /// Filesystem UUID.
    pub fsid: [u8; 16],
    /// UUID the tree block headers carry (the fsid unless METADATA_UUID is set).
    pub metadata_uuid: [u8; 16],
    /// Logical address of the root tree.
    pub root: u64,
    /// Level of the root tree's top node.
    pub root_level: u8,
    /// Logical address of the chunk tree.
    pub chunk_root: u64,
    /// Level of the chunk tree's top node.
    pub chunk_root_level: u8,
    /// Number of devices in the filesystem.
    pub num_devices: u64,
    /// Data allocation unit.
    pub sector_size: u32,
    /// Tree block size.
    pub node_size: u32,
    /// Objectid of the root tree directory holding "default" (normally 6).
    pub root_dir_objectid: u64,
    /// Device id of this device.
    pub devid: u64,
    /// The bootstrap chunk items (SYSTEM chunks), raw.
    pub sys_chunk_array: Vec<u8>,
    /// The volume label.
    pub label: String,
    /// False when the checksum algorithm is one we cannot verify.
    pub csum_verified: bool,
}

/// Computes btrfs's crc32c of `data` (standard CRC-32C).
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

impl Superblock {
    /// Reads and checks the primary superblock of `source`.
    pub fn read(source: &dyn BlockSource) -> Result<Self> {
        let end = SUPER_OFFSET + SUPER_SIZE as u64;
        if source.size() < end {
            return Err(Error::corrupt(
                "btrfs volume too small to hold a superblock",
                SUPER_OFFSET,
            ));
        }
        let mut b = vec![0u8; SUPER_SIZE];
        source.read_at(SUPER_OFFSET, &mut b)?;
        Self::parse(&b)
    }

    /// Parses a 4096-byte superblock image.
    pub fn parse(b: &[u8]) -> Result<Self> {
        let at = |rel: usize| SUPER_OFFSET + rel as u64;
        if b.len() < SUPER_SIZE || &b[0x40..0x48] != MAGIC {
            return Err(Error::corrupt("btrfs superblock magic missing", at(0x40)));
        }
        let csum_type = le16(b, 0xc4);
        let csum_verified = match csum_type {
            CSUM_CRC32C => {
                let want = le32(b, 0);
                let got = crc32c(&b[0x20..SUPER_SIZE]);
                if want != got {
                    return Err(Error::corrupt(
                        format!(
                            "btrfs superblock checksum mismatch (stored {want:#010x}, computed {got:#010x})"
                        ),
                        at(0),
                    ));
                }
                true
            }
            1..=3 => false,
            other => {
                return Err(Error::corrupt(
                    format!("unknown btrfs checksum type {other}"),
                    at(0xc4),
                ))
            }
        };
        if le64(b, 0x30) != SUPER_OFFSET {
            return Err(Error::corrupt(
                "btrfs superblock records another location for itself",
                at(0x30),
            ));
        }
        let incompat = le64(b, 0xbc);
        let unknown = incompat & !INCOMPAT_KNOWN;
        if unknown != 0 {
            return Err(Error::unsupported(format!(
                "btrfs incompat features {unknown:#x} (zoned or extent-tree-v2 or newer)"
            )));
        }
        let sector_size = le32(b, 0x90);
        let node_size = le32(b, 0x94);
        if !sector_size.is_power_of_two() || !(4096..=MAX_SECTOR_SIZE).contains(&sector_size) {
            return Err(Error::corrupt(
                format!("btrfs sector size {sector_size} is not a power of two in 4K..64K"),
                at(0x90),
            ));
        }
        if !node_size.is_power_of_two() || node_size < sector_size || node_size > MAX_NODE_SIZE {
            return Err(Error::corrupt(
                format!("btrfs node size {node_size} is not a power of two in sector size..64K"),
                at(0x94),
            ));
        }
        let sys_len = le32(b, 0xa0) as usize;
        if sys_len > SYS_CHUNK_ARRAY_MAX {
            return Err(Error::corrupt(
                format!("btrfs sys_chunk_array_size {sys_len} exceeds {SYS_CHUNK_ARRAY_MAX}"),
                at(0xa0),
            ));
        }
        let root_level = b[0xc6];
        let chunk_root_level = b[0xc7];
        let mut fsid = [0u8; 16];
        fsid.copy_from_slice(&b[0x20..0x30]);
        let mut metadata_uuid = fsid;
        if incompat & INCOMPAT_METADATA_UUID != 0 {
            metadata_uuid.copy_from_slice(&b[0x23b..0x24b]);
        }
        let label_raw = &b[0x12b..0x22b];
        let label_len = label_raw.iter().position(|&c| c == 0).unwrap_or(label_raw.len());
        Ok(Self {
            fsid,
            metadata_uuid,
            root: le64(b, 0x50),
            root_level,
            chunk_root: le64(b, 0x58),
            chunk_root_level,
            num_devices: le64(b, 0x88),
            sector_size,
            node_size,
            root_dir_objectid: le64(b, 0x80),
            devid: le64(b, 0xc9),
            sys_chunk_array: b[0x32b..0x32b + sys_len].to_vec(),
            label: String::from_utf8_lossy(&label_raw[..label_len]).into_owned(),
            csum_verified,
        })
    }

    /// The fsid as blkid prints it.
    pub fn uuid_string(&self) -> String {
        let h: String = self.fsid.iter().map(|b| format!("{b:02x}")).collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal superblock with a valid checksum.
    fn sb(edit: impl Fn(&mut [u8])) -> Vec<u8> {
        let mut b = vec![0u8; SUPER_SIZE];
        b[0x40..0x48].copy_from_slice(MAGIC);
        b[0x30..0x38].copy_from_slice(&SUPER_OFFSET.to_le_bytes());
        b[0x90..0x94].copy_from_slice(&4096u32.to_le_bytes());
        b[0x94..0x98].copy_from_slice(&16384u32.to_le_bytes());
        b[0x12b..0x12f].copy_from_slice(b"root");
        edit(&mut b);
        let c = crc32c(&b[0x20..]);
        b[0..4].copy_from_slice(&c.to_le_bytes());
        b
    }

    #[test]
    fn valid_superblock_parses() {
        let s = Superblock::parse(&sb(|b| b[0x20] = 0xab)).unwrap();
        assert_eq!(s.label, "root");
        assert!(s.uuid_string().starts_with("ab000000-0000-"));
        assert!(s.csum_verified);
    }

    #[test]
    fn sys_chunk_array_size_is_capped() {
        let b = sb(|b| b[0xa0..0xa4].copy_from_slice(&(SYS_CHUNK_ARRAY_MAX as u32 + 1).to_le_bytes()));
        let e = Superblock::parse(&b).unwrap_err();
        assert_eq!(e.kind_name(), "corrupt", "{e}");
    }

    #[test]
    fn node_size_is_capped() {
        let b = sb(|b| b[0x94..0x98].copy_from_slice(&(MAX_NODE_SIZE * 2).to_le_bytes()));
        assert_eq!(Superblock::parse(&b).unwrap_err().kind_name(), "corrupt");
        let b = sb(|b| b[0x90..0x94].copy_from_slice(&(MAX_SECTOR_SIZE * 2).to_le_bytes()));
        assert_eq!(Superblock::parse(&b).unwrap_err().kind_name(), "corrupt");
    }

    #[test]
    fn unknown_incompat_features_are_unsupported() {
        let b = sb(|b| b[0xbc..0xc4].copy_from_slice(&(1u64 << 40).to_le_bytes()));
        assert_eq!(Superblock::parse(&b).unwrap_err().kind_name(), "unsupported");
    }
}
