//! ESXi seSparse ("space-efficient sparse", ESXi 6.5+) delta extents.
//!
//! A constant header at sector 0 locates a volatile header, the grain
//! directory, the grain-table area and the grain area. Directory and table
//! entries are 64-bit with a type in the top nibble. Grains are 4 KiB and
//! tables hold 4096 entries. A pending journal replay is refused.

use super::header::SECTOR;
use super::map::TableCache;
use crate::block::ExtentKind;
use crate::error::{check_limit, Error, Result};
use crate::file::HostFile;
use std::sync::{Arc, Mutex};

/// Magic of the constant header (first u64).
pub const SESPARSE_MAGIC: u64 = 0xcafe_babe;
/// Magic of the volatile header.
const VOLATILE_MAGIC: u64 = 0xcafe_cafe;
/// The only constant-header version we know.
const VERSION: u64 = 0x2_0000_0001;
/// Grain size in sectors (fixed by the format).
const GRAIN_SECTORS: u64 = 8;
/// Grain-table size in sectors (fixed): 4096 entries of 8 bytes.
const GT_SECTORS: u64 = 64;
/// Entries per grain table.
const GTES: u64 = GT_SECTORS * SECTOR / 8;
/// Most grain-directory entries (a 64 TiB disk needs 4M).
pub const MAX_SESPARSE_GD_ENTRIES: u64 = 1 << 22;
/// Grain tables kept in the cache (32 KiB each).
const CACHED_TABLES: usize = 256;

/// Byte offsets of constant-header fields, for mutation tests.
pub mod se_field {
    /// `version` (u64).
    pub const VERSION: usize = 8;
    /// `capacity` (u64, sectors).
    pub const CAPACITY: usize = 16;
    /// `grainSize` (u64, sectors; must be 8).
    pub const GRAIN_SIZE: usize = 24;
    /// `grainTableSize` (u64, sectors; must be 64).
    pub const GT_SIZE: usize = 32;
    /// `flags` (u64; must be 0).
    pub const FLAGS: usize = 40;
    /// `volatileHeaderOffset` (u64, sectors).
    pub const VOLATILE_OFFSET: usize = 80;
    /// `grainDirOffset` (u64, sectors).
    pub const GD_OFFSET: usize = 128;
    /// `grainDirSize` (u64, sectors).
    pub const GD_SIZE: usize = 136;
    /// `grainTablesOffset` (u64, sectors).
    pub const GT_OFFSET: usize = 144;
    /// `grainTablesSize` (u64, sectors).
    pub const GT_AREA_SIZE: usize = 152;
    /// `grainsOffset` (u64, sectors).
    pub const GRAINS_OFFSET: usize = 192;
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

/// Where one seSparse grain lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SeLoc {
    Unallocated,
    Zero,
    Data(u64),
}

/// An open seSparse extent.
#[derive(Debug)]
pub struct SeSparseExtent {
    file: HostFile,
    capacity: u64,
    gd: Vec<u64>,
    gt_area: u64,
    gt_area_tables: u64,
    grains_at: u64,
    cache: Mutex<TableCache<u64>>,
}

impl SeSparseExtent {
    /// Parses the headers and reads the grain directory.
    pub fn open(file: HostFile) -> Result<Self> {
        let h = file.read_vec(0, SECTOR as usize)?;
        if u64_at(&h, 0) != SESPARSE_MAGIC {
            return Err(Error::corrupt("missing seSparse magic", 0));
        }
        let version = u64_at(&h, se_field::VERSION);
        if version != VERSION {
            return Err(Error::unsupported(format!("seSparse version {version:#x}")));
        }
        for (off, want, what) in [
            (se_field::GRAIN_SIZE, GRAIN_SECTORS, "grain size"),
            (se_field::GT_SIZE, GT_SECTORS, "grain table size"),
            (se_field::FLAGS, 0, "flags"),
        ] {
            let v = u64_at(&h, off);
            if v != want {
                return Err(Error::unsupported(format!(
                    "seSparse {what} {v} (expected {want})"
                )));
            }
        }
        let capacity = u64_at(&h, se_field::CAPACITY);
        check_limit(
            "VMDK extent capacity",
            capacity.saturating_mul(SECTOR),
            super::header::MAX_EXTENT_CAPACITY,
        )?;
        let sector = |off: usize| -> Result<u64> {
            u64_at(&h, off)
                .checked_mul(SECTOR)
                .ok_or_else(|| Error::corrupt("seSparse offset overflows", off as u64))
        };
        let vol = file.read_vec(sector(se_field::VOLATILE_OFFSET)?, 32)?;
        if u64_at(&vol, 0) != VOLATILE_MAGIC {
            return Err(Error::corrupt(
                "bad seSparse volatile header magic",
                sector(se_field::VOLATILE_OFFSET)?,
            ));
        }
        if u64_at(&vol, 24) != 0 {
            return Err(Error::unsupported(
                "seSparse extent with a journal pending replay (open it in ESXi first)",
            ));
        }
        let gd_entries = u64_at(&h, se_field::GD_SIZE).saturating_mul(SECTOR / 8);
        check_limit(
            "seSparse grain-directory entries",
            gd_entries,
            MAX_SESPARSE_GD_ENTRIES,
        )?;
        let gd_at = sector(se_field::GD_OFFSET)?;
        if gd_at.checked_add(gd_entries * 8).is_none_or(|e| e > file.len()) {
            return Err(Error::corrupt(
                "seSparse grain directory lies past the end of the file",
                gd_at,
            ));
        }
        let gd = file
            .read_vec(gd_at, (gd_entries * 8) as usize)?
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        Ok(SeSparseExtent {
            capacity: capacity * SECTOR,
            gd,
            gt_area: sector(se_field::GT_OFFSET)?,
            gt_area_tables: u64_at(&h, se_field::GT_AREA_SIZE) / GT_SECTORS,
            grains_at: sector(se_field::GRAINS_OFFSET)?,
            cache: Mutex::new(TableCache::new(CACHED_TABLES)),
            file,
        })
    }

    /// Virtual size in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The extent file.
    pub fn file(&self) -> &HostFile {
        &self.file
    }

    /// Grain size in bytes.
    pub fn grain_size(&self) -> u64 {
        GRAIN_SECTORS * SECTOR
    }

    fn table(&self, gi: usize) -> Result<Option<Arc<[u64]>>> {
        let Some(&gde) = self.gd.get(gi) else {
            return Ok(None);
        };
        if gde == 0 {
            return Ok(None);
        }
        if gde >> 32 != 0x1000_0000 {
            return Err(Error::corrupt(
                format!("seSparse directory entry {gi} is {gde:#x}"),
                0,
            ));
        }
        let index = gde & 0xffff_ffff;
        if index >= self.gt_area_tables {
            return Err(Error::corrupt(
                format!("seSparse directory entry {gi} names table {index} outside the table area"),
                0,
            ));
        }
        if let Some(t) = self.cache.lock().ok().and_then(|c| c.get(gi)) {
            return Ok(Some(t));
        }
        let at = self
            .gt_area
            .checked_add(index * GT_SECTORS * SECTOR)
            .ok_or_else(|| Error::corrupt("seSparse grain table offset overflows", 0))?;
        let t: Arc<[u64]> = self
            .file
            .read_vec(at, (GT_SECTORS * SECTOR) as usize)?
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        if let Ok(mut c) = self.cache.lock() {
            c.insert(gi, t.clone());
        }
        Ok(Some(t))
    }

    /// Where grain `g` lives, and for how many grains (holes only) that holds.
    fn lookup(&self, g: u64, max: u64) -> Result<(SeLoc, u64)> {
        let grains = self.capacity.div_ceil(self.grain_size());
        if g >= grains {
            return Ok((SeLoc::Unallocated, max.max(1)));
        }
        let gi = (g / GTES) as usize;
        let Some(t) = self.table(gi)? else {
            return Ok((SeLoc::Unallocated, (GTES - g % GTES).min(max.max(1))));
        };
        let e = t[(g % GTES) as usize];
        let loc = match e >> 60 {
            0 => SeLoc::Unallocated,
            1 | 2 => SeLoc::Zero,
            3 => {
                let index = ((e & 0x0fff_0000_0000_0000) >> 48) | ((e & 0x0000_ffff_ffff_ffff) << 12);
                let off = index
                    .checked_mul(self.grain_size())
                    .and_then(|o| o.checked_add(self.grains_at))
                    .filter(|o| *o < self.file.len())
                    .ok_or_else(|| {
                        Error::corrupt(format!("seSparse grain entry {e:#x} points past the file"), 0)
                    })?;
                SeLoc::Data(off)
            }
            _ => {
                return Err(Error::corrupt(
                    format!("seSparse grain entry {e:#x} has an unknown type"),
                    0,
                ))
            }
        };
        Ok((loc, 1))
    }

    /// Appends the allocation of `[off, off + len)` as runs.
    pub fn map_into(&self, off: u64, len: u64, out: &mut Vec<(u64, ExtentKind)>) -> Result<()> {
        let grain = self.grain_size();
        let end = off + len;
        let mut pos = off;
        while pos < end {
            let g = pos / grain;
            let (loc, span) = self.lookup(g, (end - pos).div_ceil(grain) + 1)?;
            let run_end = (g + span).saturating_mul(grain).min(end);
            let kind = match loc {
                SeLoc::Unallocated => ExtentKind::Unallocated,
                SeLoc::Zero => ExtentKind::Zero,
                SeLoc::Data(_) => ExtentKind::Data,
            };
            out.push((run_end - pos, kind));
            pos = run_end;
        }
        Ok(())
    }

    /// Reads `buf` at extent offset `off`; unallocated ranges are zeroed and
    /// reported in `holes` for a parent to fill. Adjacent grains are read at once.
    pub fn read(&self, off: u64, buf: &mut [u8], holes: &mut Vec<(usize, usize)>) -> Result<()> {
        let grain = self.grain_size();
        let mut pos = 0usize;
        // A pending run of file-contiguous data: (buffer start, file offset, length).
        let mut run: Option<(usize, u64, usize)> = None;
        while pos < buf.len() {
            let at = off + pos as u64;
            let g = at / grain;
            let left = (buf.len() - pos) as u64;
            let (loc, span) = self.lookup(g, left.div_ceil(grain) + 1)?;
            let n = ((g + span) * grain - at).min(left) as usize;
            match loc {
                SeLoc::Data(fo) => {
                    let fo = fo + at % grain;
                    match &mut run {
                        Some((bp, rf, rn)) if *bp + *rn == pos && *rf + *rn as u64 == fo => *rn += n,
                        _ => {
                            if let Some((bp, rf, rn)) = run.take() {
                                self.file.read_exact_at(rf, &mut buf[bp..bp + rn])?;
                            }
                            run = Some((pos, fo, n));
                        }
                    }
                }
                SeLoc::Zero | SeLoc::Unallocated => {
                    buf[pos..pos + n].fill(0);
                    if loc == SeLoc::Unallocated {
                        holes.push((pos, n));
                    }
                }
            }
            pos += n;
        }
        if let Some((bp, rf, rn)) = run {
            self.file.read_exact_at(rf, &mut buf[bp..bp + rn])?;
        }
        Ok(())
    }
}
