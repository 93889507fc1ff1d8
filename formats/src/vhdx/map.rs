//! VHDX block lookup: the interleaved BAT, payload block states and the
//! sector bitmaps of differencing disks. No guest data is read here.
//!
//! Payload block states: FULLY_PRESENT reads from the file. ZERO reads as
//! zero in every disk. NOT_PRESENT, UNDEFINED and UNMAPPED carry no data of
//! this layer: they read as zero in a dynamic disk and fall through to the
//! parent in a differencing one. PARTIALLY_PRESENT (differencing only)
//! consults the chunk's sector bitmap, one bit per logical sector, bit 0 of
//! byte 0 first; a clear bit falls through to the parent.

use crate::error::{check_limit, Error, Result};
use crate::vhd::runs::{BitmapCache, ReadAt, RunList, Source};
use crate::vhdx::header::{Metadata, Region};
use std::sync::Arc;

/// Most BAT entries we load (64 MiB of table: 8 TiB at 1 MiB blocks,
/// the full 64 TiB at 8 MiB blocks and above).
pub const MAX_BAT_ENTRIES: u64 = 1 << 23;
/// Most bytes of sector bitmap kept in memory; the cache is dropped when full.
pub const MAX_BITMAP_CACHE_BYTES: u64 = 64 << 20;

/// A bitmap cache that holds at most [`MAX_BITMAP_CACHE_BYTES`] of `bitmap_len`-byte bitmaps.
fn bitmap_cache(bitmap_len: u64) -> BitmapCache {
    BitmapCache::new((MAX_BITMAP_CACHE_BYTES / bitmap_len.max(1)) as usize)
}

const MIB: u64 = 1 << 20;

/// Payload block states.
mod state {
    pub const NOT_PRESENT: u64 = 0;
    pub const UNDEFINED: u64 = 1;
    pub const ZERO: u64 = 2;
    pub const UNMAPPED: u64 = 3;
    pub const FULLY_PRESENT: u64 = 6;
    pub const PARTIALLY_PRESENT: u64 = 7;
    /// Sector bitmap block state meaning "allocated".
    pub const BITMAP_PRESENT: u64 = 6;
}

/// The BAT of a VHDX, with the geometry needed to index it.
#[derive(Debug)]
pub struct Bat {
    entries: Vec<u64>,
    bat_at: u64,
    block_size: u64,
    sector: u64,
    chunk_ratio: u64,
    differencing: bool,
    /// Bytes of sector bitmap per payload block.
    bitmap_len: u64,
    /// Sector bitmaps read so far, at most [`MAX_BITMAP_CACHE_BYTES`] of them.
    bitmaps: BitmapCache,
}

impl Bat {
    /// Reads the BAT region for the disk described by `md`.
    pub fn load(file: &dyn ReadAt, region: Region, md: &Metadata) -> Result<Bat> {
        let sector = u64::from(md.logical_sector);
        // 2^23 sectors per bitmap block; block size <= 256 MiB keeps this >= 16.
        let chunk_ratio = ((1u64 << 23) * sector) / md.block_size;
        let payload = md.disk_size.div_ceil(md.block_size);
        let total = if md.has_parent {
            payload.div_ceil(chunk_ratio) * (chunk_ratio + 1)
        } else if payload == 0 {
            0
        } else {
            payload + (payload - 1) / chunk_ratio
        };
        check_limit("VHDX BAT entries", total, MAX_BAT_ENTRIES)?;
        if total * 8 > u64::from(region.length) {
            return Err(Error::corrupt(
                format!(
                    "VHDX BAT region holds {} entries but the disk needs {total}",
                    region.length / 8
                ),
                region.offset,
            ));
        }
        let raw = file.read_table(region.offset, total * 8, "VHDX BAT")?;
        let entries = raw
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        Ok(Bat {
            entries,
            bat_at: region.offset,
            block_size: md.block_size,
            sector,
            chunk_ratio,
            differencing: md.has_parent,
            bitmap_len: md.block_size / sector / 8,
            bitmaps: bitmap_cache(md.block_size / sector / 8),
        })
    }

    /// Number of payload blocks stored in the file.
    pub fn allocated(&self) -> usize {
        self.entries
            .iter()
            .enumerate()
            .filter(|(i, e)| {
                (*i as u64 + 1) % (self.chunk_ratio + 1) != 0
                    && matches!(**e & 7, state::FULLY_PRESENT | state::PARTIALLY_PRESENT)
            })
            .count()
    }

    fn entry(&self, index: u64) -> Result<u64> {
        self.entries
            .get(index as usize)
            .copied()
            .ok_or_else(|| Error::corrupt("VHDX BAT is too short for the disk", self.bat_at))
    }

    /// The part of the sector bitmap that covers payload block `block`.
    fn bitmap(&self, file: &dyn ReadAt, block: u64) -> Result<Arc<Vec<u8>>> {
        self.bitmaps.get_or_load(block, || self.read_bitmap(file, block))
    }

    /// Reads the part of the sector bitmap that covers payload block `block`.
    fn read_bitmap(&self, file: &dyn ReadAt, block: u64) -> Result<Vec<u8>> {
        let chunk = block / self.chunk_ratio;
        let index = chunk * (self.chunk_ratio + 1) + self.chunk_ratio;
        let e = self.entry(index)?;
        if e & 7 != state::BITMAP_PRESENT {
            return Err(Error::corrupt(
                format!("VHDX payload block {block} is partially present but its sector bitmap is not"),
                self.bat_at + index * 8,
            ));
        }
        let at = ((e >> 20) * MIB).saturating_add((block % self.chunk_ratio) * self.bitmap_len);
        let mut buf = vec![0u8; self.bitmap_len as usize];
        file.read_exact_at(at, &mut buf)?;
        Ok(buf)
    }

    /// Translates guest `[start, start + len)` into runs.
    pub fn runs(&self, file: &dyn ReadAt, start: u64, len: u64) -> Result<RunList> {
        let mut list = RunList::new();
        let absent = if self.differencing {
            Source::Parent
        } else {
            Source::Unallocated
        };
        let end = start + len;
        let mut pos = start;
        while pos < end {
            let block = pos / self.block_size;
            let base = block * self.block_size;
            let seg_end = end.min(base + self.block_size);
            let index = block + block / self.chunk_ratio;
            let e = self.entry(index)?;
            let data_at = (e >> 20) * MIB;
            match e & 7 {
                state::NOT_PRESENT | state::UNDEFINED | state::UNMAPPED => {
                    list.push(pos, seg_end - pos, absent)
                }
                state::ZERO => list.push(pos, seg_end - pos, Source::Zero),
                state::FULLY_PRESENT => list.push(
                    pos,
                    seg_end - pos,
                    Source::Stored(data_at.saturating_add(pos - base)),
                ),
                state::PARTIALLY_PRESENT if self.differencing => {
                    let bitmap = self.bitmap(file, block)?;
                    self.partial(&mut list, &bitmap, base, data_at, pos, seg_end);
                }
                s => {
                    return Err(Error::corrupt(
                        format!("VHDX payload block {block} has invalid state {s}"),
                        self.bat_at + index * 8,
                    ))
                }
            }
            pos = seg_end;
        }
        Ok(list)
    }

    /// Splits `[pos, seg_end)` of a partially present block by its bitmap.
    fn partial(
        &self,
        list: &mut RunList,
        bitmap: &[u8],
        base: u64,
        data_at: u64,
        mut pos: u64,
        seg_end: u64,
    ) {
        let bit = |s: u64| bitmap[(s / 8) as usize] & (1 << (s % 8)) != 0;
        let last = (seg_end - base).div_ceil(self.sector);
        let mut s = (pos - base) / self.sector;
        while pos < seg_end {
            let set = bit(s);
            let mut e = s + 1;
            while e < last && bit(e) == set {
                e += 1;
            }
            let run_end = seg_end.min(base + e * self.sector);
            let source = if set {
                Source::Stored(data_at.saturating_add(pos - base))
            } else {
                Source::Parent
            };
            list.push(pos, run_end - pos, source);
            pos = run_end;
            s = e;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file whose every byte at offset `o` is `o % 251`, of any length.
    struct Pattern;
    impl ReadAt for Pattern {
        fn len(&self) -> u64 {
            u64::MAX
        }
        fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
            for (i, b) in buf.iter_mut().enumerate() {
                *b = ((offset + i as u64) % 251) as u8;
            }
            Ok(())
        }
    }

    #[test]
    fn bitmap_cache_stays_under_its_byte_cap() {
        // 256 MiB blocks of 512-byte sectors: 64 KiB of bitmap per block,
        // so the cap holds 1024 blocks; touch more than that.
        let block_size = 256 << 20;
        let blocks = MAX_BITMAP_CACHE_BYTES / (block_size / 512 / 8) + 50;
        let md = Metadata {
            block_size,
            leave_allocated: false,
            has_parent: true,
            disk_size: blocks * block_size,
            logical_sector: 512,
            physical_sector: 512,
            disk_id: None,
            parent_locator: vec![],
        };
        let chunk_ratio = ((1u64 << 23) * 512) / block_size;
        let total = blocks.div_ceil(chunk_ratio) * (chunk_ratio + 1);
        let bat = Bat {
            entries: (0..total)
                .map(|i| {
                    if (i + 1) % (chunk_ratio + 1) == 0 {
                        (5 << 20) | 6
                    } else {
                        (9 << 20) | 7
                    }
                })
                .collect(),
            bat_at: 0,
            block_size,
            sector: 512,
            chunk_ratio,
            differencing: md.has_parent,
            bitmap_len: block_size / 512 / 8,
            bitmaps: bitmap_cache(block_size / 512 / 8),
        };
        for round in 0..2 {
            for b in 0..blocks {
                let runs = bat.runs(&Pattern, b * block_size, 4096).unwrap();
                // Sector s of block b is present when bit s of its bitmap
                // byte (which is the pattern at the bitmap's file offset) is set.
                let at = 5 * MIB + (b % chunk_ratio) * bat.bitmap_len;
                let byte = (at % 251) as u8;
                let first = runs.runs()[0].source;
                let want_stored = byte & 1 != 0;
                assert_eq!(
                    matches!(first, Source::Stored(_)),
                    want_stored,
                    "round {round} block {b}"
                );
                let cached = bat.bitmaps.len() as u64 * bat.bitmap_len;
                assert!(cached <= MAX_BITMAP_CACHE_BYTES);
            }
        }
    }
}
