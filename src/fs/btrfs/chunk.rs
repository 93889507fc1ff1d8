//! Logical-to-physical address mapping from chunk items (the bootstrap array
//! in the superblock, then the chunk tree). Single-device filesystems only,
//! with SINGLE and DUP profiles.

use super::sb::{le16, le64};
use super::Key;
use v2x_formats::{Error, Result};

/// Most chunks one filesystem may have (1 GiB data chunks: 64 TiB).
pub const MAX_CHUNKS: usize = 65536;
/// Size of a chunk item without its stripes.
pub const CHUNK_ITEM_SIZE: usize = 48;
/// Size of one stripe record.
pub const STRIPE_SIZE: usize = 32;
/// Item type of a chunk item.
pub const CHUNK_ITEM_KEY: u8 = 228;

const BG_RAID0: u64 = 1 << 3;
const BG_RAID1: u64 = 1 << 4;
const BG_DUP: u64 = 1 << 5;
const BG_RAID10: u64 = 1 << 6;
const BG_RAID5: u64 = 1 << 7;
const BG_RAID6: u64 = 1 << 8;
const BG_RAID1C3: u64 = 1 << 9;
const BG_RAID1C4: u64 = 1 << 10;

/// One chunk: `len` logical bytes at `logical`, stored at each of `copies`
/// (physical offsets on this device; two for DUP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// First logical byte.
    pub logical: u64,
    /// Length in bytes.
    pub len: u64,
    /// Physical offset of each copy.
    pub copies: Vec<u64>,
}

/// The chunk map, sorted by logical address, without overlaps.
#[derive(Debug, Default, Clone)]
pub struct ChunkMap {
    chunks: Vec<Chunk>,
}

fn profile_name(flags: u64) -> &'static str {
    match flags {
        f if f & BG_RAID0 != 0 => "RAID0",
        f if f & BG_RAID1 != 0 => "RAID1",
        f if f & BG_RAID10 != 0 => "RAID10",
        f if f & BG_RAID5 != 0 => "RAID5",
        f if f & BG_RAID6 != 0 => "RAID6",
        f if f & BG_RAID1C3 != 0 => "RAID1C3",
        f if f & BG_RAID1C4 != 0 => "RAID1C4",
        _ => "unknown",
    }
}

/// Parses one chunk item (`b` starts at the item and may run on), returning the
/// chunk and the item's size. `devid` is this device; `dev_size` its size.
pub fn parse_chunk(key: &Key, b: &[u8], devid: u64, dev_size: u64, at: u64) -> Result<(Chunk, usize)> {
    if b.len() < CHUNK_ITEM_SIZE {
        return Err(Error::corrupt("btrfs chunk item truncated", at));
    }
    let len = le64(b, 0);
    let flags = le64(b, 24);
    let num_stripes = le16(b, 44) as usize;
    let size = CHUNK_ITEM_SIZE + num_stripes * STRIPE_SIZE;
    if num_stripes == 0 || b.len() < size {
        return Err(Error::corrupt(
            format!("btrfs chunk item with {num_stripes} stripes does not fit"),
            at,
        ));
    }
    if len == 0 || key.offset.checked_add(len).is_none() {
        return Err(Error::corrupt(
            format!("btrfs chunk length {len:#x} is impossible"),
            at,
        ));
    }
    let multi = BG_RAID0 | BG_RAID1 | BG_RAID10 | BG_RAID5 | BG_RAID6 | BG_RAID1C3 | BG_RAID1C4;
    if flags & multi != 0 {
        return Err(Error::unsupported(format!(
            "btrfs {} chunk at logical {:#x}: only SINGLE and DUP profiles are read",
            profile_name(flags),
            key.offset
        )));
    }
    let want = if flags & BG_DUP != 0 { 2 } else { 1 };
    if num_stripes != want {
        return Err(Error::corrupt(
            format!("btrfs chunk has {num_stripes} stripes, its profile needs {want}"),
            at,
        ));
    }
    let mut copies = Vec::with_capacity(want);
    for i in 0..num_stripes {
        let s = CHUNK_ITEM_SIZE + i * STRIPE_SIZE;
        let stripe_dev = le64(b, s);
        let phys = le64(b, s + 8);
        if stripe_dev != devid {
            return Err(Error::unsupported(format!(
                "btrfs chunk at logical {:#x} lives on device {stripe_dev}; only single-device filesystems are read (this is device {devid})",
                key.offset
            )));
        }
        match phys.checked_add(len) {
            Some(end) if end <= dev_size => {}
            _ => {
                return Err(Error::corrupt(
                    format!(
                        "btrfs chunk at logical {:#x} maps to physical {phys:#x}+{len:#x}, outside the {dev_size}-byte device",
                        key.offset
                    ),
                    at,
                ))
            }
        }
        copies.push(phys);
    }
    Ok((
        Chunk {
            logical: key.offset,
            len,
            copies,
        },
        size,
    ))
}

impl ChunkMap {
    /// Adds a chunk; an identical duplicate (the same chunk from the bootstrap
    /// array and the chunk tree) is ignored, an overlapping one is corruption.
    pub fn insert(&mut self, chunk: Chunk, at: u64) -> Result<()> {
        let i = self.chunks.partition_point(|c| c.logical < chunk.logical);
        if self.chunks.get(i) == Some(&chunk) {
            return Ok(());
        }
        let end = chunk.logical + chunk.len;
        let overlaps_next = self.chunks.get(i).is_some_and(|n| n.logical < end);
        let overlaps_prev = i > 0 && {
            let p = &self.chunks[i - 1];
            p.logical + p.len > chunk.logical
        };
        if overlaps_next || overlaps_prev {
            return Err(Error::corrupt(
                format!("btrfs chunk at logical {:#x} overlaps another", chunk.logical),
                at,
            ));
        }
        if self.chunks.len() >= MAX_CHUNKS {
            return Err(Error::LimitExceeded {
                what: "btrfs chunks",
                value: self.chunks.len() as u64 + 1,
                max: MAX_CHUNKS as u64,
            });
        }
        self.chunks.insert(i, chunk);
        Ok(())
    }

    /// Physical offsets of each copy of logical byte `logical`, and how many
    /// bytes from there stay inside the chunk.
    pub fn map(&self, logical: u64) -> Option<(Vec<u64>, u64)> {
        let i = self.chunks.partition_point(|c| c.logical <= logical);
        let c = self.chunks.get(i.checked_sub(1)?)?;
        let rel = logical - c.logical;
        if rel >= c.len {
            return None;
        }
        Some((c.copies.iter().map(|p| p + rel).collect(), c.len - rel))
    }

    /// True when no chunk is known.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }
}

/// Parses the superblock's bootstrap array of (key, chunk item) pairs.
pub fn parse_sys_array(arr: &[u8], devid: u64, dev_size: u64) -> Result<ChunkMap> {
    let mut map = ChunkMap::default();
    let mut pos = 0usize;
    // 0x32b: offset of the array inside the superblock.
    let base = super::sb::SUPER_OFFSET + 0x32b;
    while pos < arr.len() {
        let at = base + pos as u64;
        let Some(key) = arr.get(pos..pos + 17).map(Key::parse) else {
            return Err(Error::corrupt("btrfs sys_chunk_array key truncated", at));
        };
        if key.ty != CHUNK_ITEM_KEY {
            return Err(Error::corrupt(
                format!("btrfs sys_chunk_array holds item type {}", key.ty),
                at,
            ));
        }
        pos += 17;
        let (chunk, size) = parse_chunk(&key, &arr[pos..], devid, dev_size, at)?;
        map.insert(chunk, at)?;
        pos += size;
    }
    if map.is_empty() {
        return Err(Error::corrupt(
            "btrfs sys_chunk_array is empty",
            super::sb::SUPER_OFFSET + 0xa0,
        ));
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(logical: u64, len: u64) -> Chunk {
        Chunk {
            logical,
            len,
            copies: vec![logical + 0x1000],
        }
    }

    #[test]
    fn map_finds_the_covering_chunk() {
        let mut m = ChunkMap::default();
        m.insert(chunk(0x100000, 0x10000), 0).unwrap();
        m.insert(chunk(0x200000, 0x10000), 0).unwrap();
        assert_eq!(m.map(0x100010), Some((vec![0x101010], 0xfff0)));
        assert_eq!(m.map(0x1fffff), None);
        assert_eq!(m.map(0xfffff), None);
        assert_eq!(m.map(0x20ffff), Some((vec![0x210fff], 1)));
    }

    #[test]
    fn overlapping_chunks_are_corrupt() {
        let mut m = ChunkMap::default();
        m.insert(chunk(0x100000, 0x10000), 0).unwrap();
        m.insert(chunk(0x100000, 0x10000), 0).unwrap();
        assert!(m.insert(chunk(0x108000, 0x10000), 7).is_err());
        assert!(m.insert(chunk(0xf8000, 0x10000), 7).is_err());
    }

    #[test]
    fn chunk_count_is_capped() {
        let mut m = ChunkMap::default();
        for i in 0..MAX_CHUNKS as u64 {
            m.insert(chunk(i * 0x10000, 0x10000), 0).unwrap();
        }
        let e = m
            .insert(chunk(MAX_CHUNKS as u64 * 0x10000, 0x10000), 0)
            .unwrap_err();
        assert_eq!(e.kind_name(), "limit-exceeded");
    }

    #[test]
    fn raid_profiles_are_unsupported() {
        let mut b = vec![0u8; CHUNK_ITEM_SIZE + 2 * STRIPE_SIZE];
        b[0..8].copy_from_slice(&0x10000u64.to_le_bytes());
        b[24..32].copy_from_slice(&(1u64 | BG_RAID1).to_le_bytes());
        b[44..46].copy_from_slice(&2u16.to_le_bytes());
        let key = Key {
            objectid: 256,
            ty: CHUNK_ITEM_KEY,
            offset: 0x100000,
        };
        let e = parse_chunk(&key, &b, 1, 1 << 30, 0).unwrap_err();
        assert_eq!(e.kind_name(), "unsupported", "{e}");
        assert!(e.to_string().contains("RAID1"), "{e}");
    }
}
