//! VHD block lookup: the BAT, per-block sector bitmaps, and the translation of
//! guest ranges into runs. No guest data is read here.

use crate::error::{check_limit, Error, Result};
use crate::vhd::header::DynHeader;
use crate::vhd::runs::{BitmapCache, ReadAt, RunList, Source};
use std::sync::Arc;

/// Most BAT entries we load (16 MiB of table; 8 TiB at the default 2 MiB blocks).
pub const MAX_BAT_ENTRIES: u64 = 1 << 22;
/// Most sector bitmaps kept in memory at once; the cache is dropped when full.
pub const MAX_CACHED_BITMAPS: usize = 4096;

/// BAT value of a block that is not allocated.
const UNUSED: u32 = 0xffff_ffff;
const SECTOR: u64 = 512;

/// The block allocation table of a dynamic or differencing disk.
#[derive(Debug)]
pub struct Bat {
    /// Sector number of each block's bitmap, or [`UNUSED`].
    entries: Vec<u32>,
    /// Bytes per block.
    block_size: u64,
    /// Bytes of sector bitmap before each block's data (whole sectors).
    bitmap_len: u64,
    /// Sector bitmaps read so far, by block number.
    bitmaps: BitmapCache,
    /// Whether a clear bitmap bit means "ask the parent" (differencing) or "zero".
    absent: Source,
}

impl Bat {
    /// Reads the BAT described by `hdr` for a disk of `size` bytes from `file`.
    /// `differencing` decides what clear bitmap bits mean.
    pub fn load(
        file: &dyn ReadAt,
        hdr: &DynHeader,
        hdr_at: u64,
        size: u64,
        differencing: bool,
    ) -> Result<Bat> {
        let count = u64::from(hdr.max_table_entries);
        check_limit("VHD BAT entries", count, MAX_BAT_ENTRIES)?;
        let needed = size.div_ceil(hdr.block_size);
        if needed > count {
            return Err(Error::corrupt(
                format!(
                    "VHD BAT has {count} entries but the {size}-byte disk needs {needed} blocks of {}",
                    hdr.block_size
                ),
                hdr_at + crate::vhd::header::dyn_off::MAX_TABLE_ENTRIES as u64,
            ));
        }
        // `needed` <= MAX_BAT_ENTRIES, and the table lies in the file.
        let raw = file.read_table(hdr.table_offset, needed * 4, "VHD BAT")?;
        let sectors_per_block = hdr.block_size / SECTOR;
        let bitmap_len = sectors_per_block.div_ceil(8).next_multiple_of(SECTOR);
        let entries: Vec<u32> = raw
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        for (i, e) in entries.iter().enumerate() {
            if *e != UNUSED && u64::from(*e) * SECTOR >= file.len() {
                return Err(Error::corrupt(
                    format!("VHD BAT entry {i} points past the end of the file (sector {e})"),
                    hdr.table_offset + i as u64 * 4,
                ));
            }
        }
        Ok(Bat {
            entries,
            block_size: hdr.block_size,
            bitmap_len,
            bitmaps: BitmapCache::new(MAX_CACHED_BITMAPS),
            absent: if differencing {
                Source::Parent
            } else {
                Source::Unallocated
            },
        })
    }

    /// Number of allocated blocks.
    pub fn allocated(&self) -> usize {
        self.entries.iter().filter(|e| **e != UNUSED).count()
    }

    /// The sector bitmap of allocated block `block` stored at `bitmap_at`.
    fn bitmap(&self, file: &dyn ReadAt, block: u64, bitmap_at: u64) -> Result<Arc<Vec<u8>>> {
        self.bitmaps.get_or_load(block, || {
            let mut buf = vec![0u8; self.bitmap_len as usize];
            file.read_exact_at(bitmap_at, &mut buf)?;
            Ok(buf)
        })
    }

    /// Translates guest `[start, start + len)` into runs.
    pub fn runs(&self, file: &dyn ReadAt, start: u64, len: u64) -> Result<RunList> {
        let mut list = RunList::new();
        let end = start + len;
        let mut pos = start;
        while pos < end {
            let block = pos / self.block_size;
            let base = block * self.block_size;
            let seg_end = end.min(base + self.block_size);
            let entry = self.entries.get(block as usize).copied().unwrap_or(UNUSED);
            if entry == UNUSED {
                list.push(pos, seg_end - pos, self.absent);
                pos = seg_end;
                continue;
            }
            let bitmap_at = u64::from(entry) * SECTOR;
            let data_at = bitmap_at + self.bitmap_len;
            let bitmap = self.bitmap(file, block, bitmap_at)?;
            let bit = |s: u64| bitmap[(s / 8) as usize] & (0x80 >> (s % 8)) != 0;
            let last_sector = (seg_end - base).div_ceil(SECTOR);
            let mut s = (pos - base) / SECTOR;
            while pos < seg_end {
                let set = bit(s);
                let mut e = s + 1;
                while e < last_sector {
                    if e % 8 == 0 && e + 8 <= last_sector {
                        let whole = if set { 0xff } else { 0 };
                        if bitmap[(e / 8) as usize] == whole {
                            e += 8;
                            continue;
                        }
                    }
                    if bit(e) != set {
                        break;
                    }
                    e += 1;
                }
                let run_end = seg_end.min(base + e * SECTOR);
                let source = if set {
                    Source::Stored(data_at + (pos - base))
                } else {
                    self.absent
                };
                list.push(pos, run_end - pos, source);
                pos = run_end;
                s = e;
            }
        }
        Ok(list)
    }
}
