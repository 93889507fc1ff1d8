//! Grain lookup for sparse extents: grain directory → grain table → grain.
//!
//! A lookup answers where a grain lives ([`GrainLoc`]) without reading it.
//! Grain tables are read on demand and kept in a small bounded cache; the
//! cache lock is never held during I/O. A damaged primary grain table is
//! replaced by its redundant copy when the extent has one, with a note.

use super::header::SECTOR;
use crate::error::{check_limit, Error, Result};
use crate::file::HostFile;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// Bytes of grain tables kept in one extent's cache.
pub const MAX_GT_CACHE_BYTES: u64 = 16 << 20;
/// Most grains a marker scan of a streamOptimized extent may find.
pub const MAX_SCANNED_GRAINS: u64 = 1 << 22;

/// A grain-table entry of 1 marks a grain that reads as zero. Sector 1 is
/// always inside the header and descriptor, so 1 is never a real grain.
pub const GTE_ZERO: u32 = 1;

/// Where one grain lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrainLoc {
    /// Not stored here: a parent (or zeros) answers.
    Unallocated,
    /// Stored as "reads as zero".
    Zero,
    /// Stored uncompressed at this byte offset of the extent file.
    Plain(u64),
    /// Stored compressed; the byte offset of its marker (or data, without markers).
    Compressed(u64),
}

/// How an extent finds its grains.
#[derive(Debug)]
pub enum Directory {
    /// A grain directory of grain-table sector offsets, with an optional redundant copy.
    Tables {
        /// The directory in use.
        gd: Vec<u32>,
        /// The redundant directory, used per table when a primary table is damaged.
        rgd: Option<Vec<u32>>,
    },
    /// A grain → marker-offset list built by scanning a streamOptimized file, sorted by grain.
    Scanned(Vec<(u64, u64)>),
}

/// Looks up grains of one sparse extent.
#[derive(Debug)]
pub struct GrainMap {
    /// Grain size in bytes.
    pub grain: u64,
    /// Number of grains the extent's capacity covers.
    pub grains: u64,
    gtes_per_gt: u64,
    compressed: bool,
    file_len: u64,
    dir: Directory,
    cache: Mutex<TableCache<u32>>,
    notes: Mutex<Vec<String>>,
}

/// A bounded cache of grain tables, evicting the oldest first. The lock
/// around it is only ever held for a lookup or an insert, never during I/O.
#[derive(Debug)]
pub(super) struct TableCache<T> {
    tables: HashMap<usize, Arc<[T]>>,
    order: VecDeque<usize>,
    cap: usize,
}

impl<T> TableCache<T> {
    /// A cache holding at most `cap` tables (at least one).
    pub(super) fn new(cap: usize) -> Self {
        TableCache {
            tables: HashMap::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// The cached table `k`.
    pub(super) fn get(&self, k: usize) -> Option<Arc<[T]>> {
        self.tables.get(&k).cloned()
    }

    /// Caches table `k`, evicting the oldest beyond the cap.
    pub(super) fn insert(&mut self, k: usize, v: Arc<[T]>) {
        if self.tables.insert(k, v).is_none() {
            self.order.push_back(k);
            while self.order.len() > self.cap {
                if let Some(old) = self.order.pop_front() {
                    self.tables.remove(&old);
                }
            }
        }
    }
}

/// Reads `n` little-endian u32 entries at byte `offset`.
pub fn read_u32_table(file: &HostFile, offset: u64, n: u64) -> Result<Vec<u32>> {
    // Check the range before allocating: the count came from the image.
    if offset
        .checked_add(n.saturating_mul(4))
        .is_none_or(|end| end > file.len())
    {
        return Err(Error::corrupt(
            format!("table of {n} entries at {offset:#x} lies past the end of the file"),
            offset,
        ));
    }
    let bytes = file.read_vec(
        offset,
        usize::try_from(n * 4).map_err(|_| Error::invalid("table too large"))?,
    )?;
    Ok(bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Number of grain-directory entries needed to cover `grains` grains.
pub fn gd_entries(grains: u64, gtes_per_gt: u64) -> u64 {
    grains.div_ceil(gtes_per_gt)
}

impl GrainMap {
    /// A map over `capacity` bytes with grains of `grain` bytes.
    pub fn new(
        grain: u64,
        capacity: u64,
        gtes_per_gt: u32,
        compressed: bool,
        file_len: u64,
        dir: Directory,
    ) -> Self {
        let gt_bytes = u64::from(gtes_per_gt) * 4;
        let cap = (MAX_GT_CACHE_BYTES / gt_bytes.max(1)).max(1) as usize;
        GrainMap {
            grain,
            grains: capacity.div_ceil(grain),
            gtes_per_gt: u64::from(gtes_per_gt),
            compressed,
            file_len,
            dir,
            cache: Mutex::new(TableCache::new(cap)),
            notes: Mutex::new(Vec::new()),
        }
    }

    /// Notes gathered while reading (redundant tables used).
    pub fn notes(&self) -> Vec<String> {
        self.notes.lock().map(|n| n.clone()).unwrap_or_default()
    }

    fn note(&self, s: String) {
        if let Ok(mut n) = self.notes.lock() {
            if !n.contains(&s) && n.len() < 16 {
                n.push(s);
            }
        }
    }

    /// True when a grain-directory entry can point at a whole grain table.
    pub fn gde_ok(gde: u32, gtes_per_gt: u32, file_len: u64) -> bool {
        gde == 0 || {
            let start = u64::from(gde) * SECTOR;
            start + u64::from(gtes_per_gt) * 4 <= file_len
        }
    }

    /// True when a grain-table entry can point at a grain of this file.
    fn gte_ok(&self, gte: u32) -> bool {
        gte <= GTE_ZERO || u64::from(gte) * SECTOR < self.file_len
    }

    /// Where grain `g` lives, and for how many grains from `g` (at most
    /// `max`) the answer stays the same. Only holes span more than one grain,
    /// so an empty disk maps quickly.
    pub fn lookup_span(&self, file: &HostFile, g: u64, max: u64) -> Result<(GrainLoc, u64)> {
        let max = max.max(1);
        if g >= self.grains {
            return Ok((GrainLoc::Unallocated, max));
        }
        let rest = (self.grains - g).min(max);
        match &self.dir {
            Directory::Scanned(list) => {
                let i = list.partition_point(|e| e.0 < g);
                match list.get(i) {
                    Some(e) if e.0 == g => Ok((GrainLoc::Compressed(e.1), 1)),
                    Some(e) => Ok((GrainLoc::Unallocated, (e.0 - g).min(rest))),
                    None => Ok((GrainLoc::Unallocated, rest)),
                }
            }
            Directory::Tables { gd, .. } => {
                let gi = (g / self.gtes_per_gt) as usize;
                if gd.get(gi).is_none_or(|e| *e == 0) {
                    let to_end = self.gtes_per_gt - g % self.gtes_per_gt;
                    return Ok((GrainLoc::Unallocated, to_end.min(rest)));
                }
                let table = self.table(file, gi, gd, rgd_of(&self.dir))?;
                let ti = (g % self.gtes_per_gt) as usize;
                let loc = self.decode(table[ti]);
                if !matches!(loc, GrainLoc::Unallocated | GrainLoc::Zero) {
                    return Ok((loc, 1));
                }
                // Runs of holes or zero grains inside one table answer at once.
                let limit = (table.len() - ti).min(rest as usize);
                let same = table[ti..ti + limit]
                    .iter()
                    .take_while(|e| self.decode(**e) == loc)
                    .count();
                Ok((loc, same.max(1) as u64))
            }
        }
    }

    fn decode(&self, gte: u32) -> GrainLoc {
        match gte {
            0 => GrainLoc::Unallocated,
            GTE_ZERO => GrainLoc::Zero,
            s if self.compressed => GrainLoc::Compressed(u64::from(s) * SECTOR),
            s => GrainLoc::Plain(u64::from(s) * SECTOR),
        }
    }

    /// Grain table `gi` (whose directory entry is non-zero), from the cache or the file.
    fn table(&self, file: &HostFile, gi: usize, gd: &[u32], rgd: Option<&[u32]>) -> Result<Arc<[u32]>> {
        if let Some(t) = self.cache.lock().ok().and_then(|c| c.get(gi)) {
            return Ok(t);
        }
        let t: Arc<[u32]> = self.read_gt(file, gi, gd[gi], rgd)?.into();
        if let Ok(mut c) = self.cache.lock() {
            c.insert(gi, t.clone());
        }
        Ok(t)
    }

    /// Where grain `g` lives.
    #[cfg(test)]
    pub fn lookup(&self, file: &HostFile, g: u64) -> Result<GrainLoc> {
        self.lookup_span(file, g, 1).map(|(loc, _)| loc)
    }

    /// Reads grain table `gi`, falling back to the redundant copy when the
    /// primary holds entries that point outside the file.
    fn read_gt(&self, file: &HostFile, gi: usize, gde: u32, rgd: Option<&[u32]>) -> Result<Vec<u32>> {
        let off = u64::from(gde) * SECTOR;
        let primary = read_u32_table(file, off, self.gtes_per_gt);
        let bad = match &primary {
            Ok(t) => t.iter().position(|e| !self.gte_ok(*e)),
            Err(_) => Some(0),
        };
        let Some(bad) = bad else { return primary };
        if let Some(&rgde) = rgd.and_then(|r| r.get(gi)) {
            if rgde != 0 && rgde != gde && Self::gde_ok(rgde, self.gtes_per_gt as u32, self.file_len) {
                let t = read_u32_table(file, u64::from(rgde) * SECTOR, self.gtes_per_gt)?;
                if t.iter().all(|e| self.gte_ok(*e)) {
                    self.note(format!(
                        "grain table {gi} at {off:#x} is damaged; used its redundant copy"
                    ));
                    return Ok(t);
                }
            }
        }
        primary?;
        Err(Error::corrupt(
            format!("grain table {gi} entry {bad} points past the end of the file"),
            off + bad as u64 * 4,
        ))
    }
}

fn rgd_of(dir: &Directory) -> Option<&[u32]> {
    match dir {
        Directory::Tables { rgd, .. } => rgd.as_deref(),
        Directory::Scanned(_) => None,
    }
}

/// Validates a grain directory read from `file`; None when an entry is out of range.
pub fn check_gd(gd: &[u32], gtes_per_gt: u32, file_len: u64) -> Option<usize> {
    gd.iter()
        .position(|e| !GrainMap::gde_ok(*e, gtes_per_gt, file_len))
}

/// Reads a grain directory of `entries` entries at sector `sector`, capped.
pub fn read_gd(file: &HostFile, sector: u64, entries: u64) -> Result<Vec<u32>> {
    check_limit(
        "VMDK grain-directory entries",
        entries,
        super::header::MAX_GD_ENTRIES,
    )?;
    let off = sector
        .checked_mul(SECTOR)
        .ok_or_else(|| Error::corrupt("grain directory offset overflows", 0))?;
    read_u32_table(file, off, entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gt_cache_is_bounded_by_max_gt_cache_bytes() {
        let gd: Vec<u32> = (0..64).map(|i| 1 + i * 4).collect();
        let file = HostFile::from_bytes("gt", vec![0u8; 512 * 300]);
        // 4096-entry tables are 16 KiB, so the cache holds MAX_GT_CACHE_BYTES / 16 KiB of them.
        let map = GrainMap::new(
            512,
            512 * 4096 * 64,
            4096,
            false,
            file.len(),
            Directory::Tables { gd, rgd: None },
        );
        let cap = (MAX_GT_CACHE_BYTES / (4096 * 4)) as usize;
        assert_eq!(map.cache.lock().unwrap().cap, cap);
        let mut c = TableCache::new(3);
        for k in 0..10 {
            c.insert(k, vec![0u32; 4].into());
        }
        assert_eq!(c.tables.len(), 3);
        assert!(c.tables.contains_key(&9) && !c.tables.contains_key(&0));
        assert_eq!(map.lookup(&file, 5).unwrap(), GrainLoc::Unallocated);
    }

    #[test]
    fn zero_grain_entry_and_out_of_range_entry() {
        let mut bytes = vec![0u8; 512 * 4];
        bytes[1024..1028].copy_from_slice(&GTE_ZERO.to_le_bytes());
        bytes[1028..1032].copy_from_slice(&3u32.to_le_bytes());
        bytes[1032..1036].copy_from_slice(&999u32.to_le_bytes());
        let file = HostFile::from_bytes("gt", bytes);
        let dir = Directory::Tables {
            gd: vec![2],
            rgd: None,
        };
        let map = GrainMap::new(512, 512 * 128, 128, false, file.len(), dir);
        let e = map.lookup(&file, 0).unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        let dir = Directory::Tables {
            gd: vec![2],
            rgd: None,
        };
        let mut ok = file.read_vec(0, 2048).unwrap();
        ok[1032..1036].fill(0);
        let file = HostFile::from_bytes("gt", ok);
        let map = GrainMap::new(512, 512 * 128, 128, false, file.len(), dir);
        assert_eq!(map.lookup(&file, 0).unwrap(), GrainLoc::Zero);
        assert_eq!(map.lookup(&file, 1).unwrap(), GrainLoc::Plain(1536));
        assert_eq!(map.lookup(&file, 2).unwrap(), GrainLoc::Unallocated);
    }
}
