//! Guest-to-host mapping through the L1 and L2 tables. A lookup yields
//! [`Mapping`]s for runs of guest bytes; reading them is the caller's job.
//!
//! L2 tables are loaded on demand and kept in a bounded cache shared by all
//! reader threads. The cache lock is held only to look up or insert a table,
//! never during I/O.

use super::header::Header;
use crate::error::{check_limit, Error, Result};
use crate::file::HostFile;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// Most bytes of L2 tables kept in memory per image.
pub const MAX_L2_CACHE_BYTES: u64 = 32 << 20;

/// L1 entry: bits 9-55 hold the L2 table offset.
const L1_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// L1 entry: bits 0-8 and 56-62 are reserved.
const L1_RESERVED_MASK: u64 = 0x7f00_0000_0000_01ff;
/// L2 entry bit 63: refcount is exactly one.
const L2_COPIED: u64 = 1 << 63;
/// L2 entry bit 62: compressed cluster.
const L2_COMPRESSED: u64 = 1 << 62;
/// Standard descriptor bit 0: the cluster reads as zeros.
const L2_ZERO: u64 = 1;
/// Standard descriptor: bits 9-55 hold the host cluster offset.
const L2_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Standard descriptor: bits 1-8 and 56-61 are reserved.
const L2_RESERVED_MASK: u64 = 0x3f00_0000_0000_01fe;
/// Subclusters per cluster with extended L2 entries.
const SUBCLUSTERS: u64 = 32;

/// Where a run of guest bytes is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// Not stored in this image: read the backing file, or zeros.
    Unallocated,
    /// Reads as zeros without looking at the backing file.
    Zero,
    /// Stored uncompressed; `host_offset` is where the run's first byte lies.
    Data {
        /// Offset in the data file of the first byte of the run.
        host_offset: u64,
    },
    /// Part of a compressed cluster.
    Compressed {
        /// Offset in the image file where the compressed stream starts.
        host_offset: u64,
        /// Bytes the compressed stream may occupy.
        len: u64,
    },
}

/// A run of guest bytes sharing one mapping, never crossing a cluster
/// boundary unless it is [`Mapping::Unallocated`] for a whole L2 range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// First guest byte.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// How it is stored.
    pub mapping: Mapping,
}

/// Decoded L2 entry of one cluster.
#[derive(Debug, Clone, Copy)]
enum ClusterEntry {
    Unallocated,
    Zero,
    Data(u64),
    Compressed {
        host_offset: u64,
        len: u64,
    },
    /// Extended L2: per-subcluster allocation and zero bits.
    Sub {
        host: u64,
        alloc: u32,
        zero: u32,
    },
}

/// The active L1 table, the L2 cache and the geometry needed to walk them.
#[derive(Debug)]
pub struct ClusterMap {
    file: HostFile,
    cluster_bits: u32,
    /// log2 of the entries per L2 table.
    l2_bits: u32,
    /// 1 for standard entries, 2 for extended ones.
    entry_words: usize,
    version3: bool,
    external_data: bool,
    /// Length of the file holding guest data (the image or its data file).
    data_len: u64,
    l1_offset: u64,
    l1: Vec<u64>,
    cache: L2Cache,
}

impl ClusterMap {
    /// Loads the L1 entries covering the virtual size of `h` from `file`.
    /// `data_len` is the length of the file guest clusters live in.
    pub fn load(file: HostFile, h: &Header, data_len: u64) -> Result<Self> {
        let cluster_bits = h.cluster_bits;
        let entry_words: usize = if h.extended_l2() { 2 } else { 1 };
        // Entries per table: cluster / 8 or cluster / 16.
        let l2_bits = cluster_bits - 3 - (entry_words as u32 - 1);
        let l1_span_bits = cluster_bits + l2_bits;
        let needed = h.size.div_ceil(1u64 << l1_span_bits);
        check_limit(
            "qcow2 l1_size",
            u64::from(h.l1_size),
            super::header::MAX_L1_ENTRIES,
        )?;
        if u64::from(h.l1_size) < needed {
            return Err(Error::corrupt(
                format!(
                    "L1 table has {} entries, the {}-byte disk needs {needed}",
                    h.l1_size, h.size
                ),
                36,
            ));
        }
        let cluster_size = 1u64 << cluster_bits;
        if h.l1_table_offset % cluster_size != 0 {
            return Err(Error::corrupt(
                format!("L1 table offset {:#x} is not cluster-aligned", h.l1_table_offset),
                40,
            ));
        }
        let stored = u64::from(h.l1_size) * 8;
        if h.l1_table_offset
            .checked_add(stored)
            .is_none_or(|e| e > file.len())
        {
            return Err(Error::corrupt(
                format!(
                    "L1 table ({} entries at {:#x}) lies past the end of the file",
                    h.l1_size, h.l1_table_offset
                ),
                40,
            ));
        }
        // In range: needed <= l1_size <= MAX_L1_ENTRIES and the table fits in the file.
        let raw = file.read_vec(h.l1_table_offset, (needed * 8) as usize)?;
        let l1 = raw
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        let tables = (MAX_L2_CACHE_BYTES >> cluster_bits).max(4) as usize;
        let map = ClusterMap {
            file,
            cluster_bits,
            l2_bits,
            entry_words,
            version3: h.version >= 3,
            external_data: h.has_data_file(),
            data_len,
            l1_offset: h.l1_table_offset,
            l1,
            cache: L2Cache::new(tables),
        };
        // Check every L1 entry now, so a bad table is refused at open time.
        for i in 0..map.l1.len() as u64 {
            map.l2_offset(i)?;
        }
        Ok(map)
    }

    /// The image file the tables live in.
    pub fn file(&self) -> &HostFile {
        &self.file
    }

    /// Calls `f` with the pieces covering `[start, end)`, in order.
    pub fn walk(&self, start: u64, end: u64, f: &mut dyn FnMut(Piece) -> Result<()>) -> Result<()> {
        let cb = self.cluster_bits;
        let cs = 1u64 << cb;
        let span_bits = cb + self.l2_bits;
        let mut pos = start;
        while pos < end {
            let l1_idx = pos >> span_bits;
            let span_end = ((l1_idx + 1) << span_bits).min(end);
            let Some((l2_offset, table)) = self.l2_table(l1_idx)? else {
                f(Piece {
                    start: pos,
                    len: span_end - pos,
                    mapping: Mapping::Unallocated,
                })?;
                pos = span_end;
                continue;
            };
            while pos < span_end {
                let idx = ((pos >> cb) & ((1u64 << self.l2_bits) - 1)) as usize;
                let cluster_start = pos & !(cs - 1);
                let cluster_end = (cluster_start + cs).min(span_end);
                let word = idx * self.entry_words;
                let entry_at = l2_offset + (word as u64) * 8;
                let bitmap = (self.entry_words == 2).then(|| table[word + 1]);
                let entry = self.decode(table[word], bitmap, entry_at)?;
                let in_cluster = pos - cluster_start;
                let whole = |mapping| Piece {
                    start: pos,
                    len: cluster_end - pos,
                    mapping,
                };
                match entry {
                    ClusterEntry::Unallocated => f(whole(Mapping::Unallocated))?,
                    ClusterEntry::Zero => f(whole(Mapping::Zero))?,
                    ClusterEntry::Data(host) => f(whole(Mapping::Data {
                        host_offset: host + in_cluster,
                    }))?,
                    ClusterEntry::Compressed { host_offset, len } => {
                        f(whole(Mapping::Compressed { host_offset, len }))?
                    }
                    ClusterEntry::Sub { host, alloc, zero } => {
                        let sc_bits = cb - 5;
                        let mut at = pos;
                        while at < cluster_end {
                            let sc = (at - cluster_start) >> sc_bits;
                            let kind = sub_kind(alloc, zero, sc);
                            let mut next = sc + 1;
                            while next < SUBCLUSTERS && sub_kind(alloc, zero, next) == kind {
                                next += 1;
                            }
                            let run_end = (cluster_start + (next << sc_bits)).min(cluster_end);
                            let mapping = match kind {
                                SubKind::Alloc => Mapping::Data {
                                    host_offset: host + (at - cluster_start),
                                },
                                SubKind::Zero => Mapping::Zero,
                                SubKind::Unalloc => Mapping::Unallocated,
                            };
                            f(Piece {
                                start: at,
                                len: run_end - at,
                                mapping,
                            })?;
                            at = run_end;
                        }
                    }
                }
                pos = cluster_end;
            }
        }
        Ok(())
    }

    /// The checked file offset of the L2 table for `l1_idx`, or None when unallocated.
    fn l2_offset(&self, l1_idx: u64) -> Result<Option<u64>> {
        let Some(&entry) = usize::try_from(l1_idx).ok().and_then(|i| self.l1.get(i)) else {
            return Ok(None);
        };
        let entry_at = self.l1_offset + l1_idx * 8;
        if entry & L1_RESERVED_MASK != 0 {
            return Err(Error::corrupt(
                format!("L1 entry {entry:#018x} has reserved bits set"),
                entry_at,
            ));
        }
        let offset = entry & L1_OFFSET_MASK;
        if offset == 0 {
            return Ok(None);
        }
        let cs = 1u64 << self.cluster_bits;
        if offset % cs != 0 {
            return Err(Error::corrupt(
                format!("L2 table offset {offset:#x} is not cluster-aligned"),
                entry_at,
            ));
        }
        if offset.checked_add(cs).is_none_or(|e| e > self.file.len()) {
            return Err(Error::corrupt(
                format!("L2 table at {offset:#x} lies past the end of the file"),
                entry_at,
            ));
        }
        Ok(Some(offset))
    }

    /// The L2 table for `l1_idx` and its file offset, or None when unallocated.
    fn l2_table(&self, l1_idx: u64) -> Result<Option<(u64, Arc<[u64]>)>> {
        let Some(offset) = self.l2_offset(l1_idx)? else {
            return Ok(None);
        };
        let cs = 1u64 << self.cluster_bits;
        if let Some(t) = self.cache.get(l1_idx) {
            return Ok(Some((offset, t)));
        }
        // Loaded without the lock; two threads may race to load one table, which is harmless.
        let raw = self.file.read_vec(offset, cs as usize)?;
        let table: Arc<[u64]> = raw
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        self.cache.insert(l1_idx, table.clone());
        Ok(Some((offset, table)))
    }

    /// Decodes one L2 entry (and its subcluster bitmap) found at `at`.
    fn decode(&self, e: u64, bitmap: Option<u64>, at: u64) -> Result<ClusterEntry> {
        let corrupt = |what: String| Err(Error::corrupt(format!("L2 entry {e:#018x}: {what}"), at));
        if e & L2_COMPRESSED != 0 {
            if self.external_data {
                return corrupt("compressed cluster in an image with an external data file".into());
            }
            if bitmap.is_some_and(|b| b != 0) {
                return corrupt("compressed cluster with a subcluster bitmap".into());
            }
            let x = 62 - (self.cluster_bits - 8);
            let host_offset = e & ((1u64 << x) - 1);
            if host_offset >> 56 != 0 {
                return corrupt("compressed cluster offset beyond 2^56".into());
            }
            let sectors = (e & ((1u64 << 62) - 1)) >> x;
            let len = (sectors + 1) * 512 - (host_offset & 511);
            if host_offset >= self.file.len() {
                return corrupt(format!(
                    "compressed cluster at {host_offset:#x} lies past the end of the file"
                ));
            }
            return Ok(ClusterEntry::Compressed { host_offset, len });
        }
        if e & L2_RESERVED_MASK != 0 {
            return corrupt("reserved bits set".into());
        }
        let zero_flag = e & L2_ZERO != 0;
        if zero_flag && (!self.version3 || bitmap.is_some()) {
            return corrupt("zero flag set where the format reserves it".into());
        }
        let host = e & L2_OFFSET_MASK;
        let cs = 1u64 << self.cluster_bits;
        if host % cs != 0 {
            return corrupt(format!("host offset {host:#x} is not cluster-aligned"));
        }
        let allocated = host != 0 || (self.external_data && e & L2_COPIED != 0);
        if host == 0 && e & L2_COPIED != 0 && !self.external_data && !zero_flag {
            return corrupt("allocated cluster at host offset 0".into());
        }
        if allocated && host >= self.data_len {
            return corrupt(format!(
                "data cluster at {host:#x} lies past the end of the data file"
            ));
        }
        if let Some(b) = bitmap {
            let alloc = b as u32;
            let zero = (b >> 32) as u32;
            if alloc & zero != 0 {
                return corrupt("subclusters both allocated and zero".into());
            }
            if alloc != 0 && !allocated {
                return corrupt("allocated subclusters in an unallocated cluster".into());
            }
            return Ok(ClusterEntry::Sub { host, alloc, zero });
        }
        Ok(if zero_flag {
            ClusterEntry::Zero
        } else if allocated {
            ClusterEntry::Data(host)
        } else {
            ClusterEntry::Unallocated
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubKind {
    Alloc,
    Zero,
    Unalloc,
}

fn sub_kind(alloc: u32, zero: u32, sc: u64) -> SubKind {
    if alloc >> sc & 1 != 0 {
        SubKind::Alloc
    } else if zero >> sc & 1 != 0 {
        SubKind::Zero
    } else {
        SubKind::Unalloc
    }
}

/// A bounded cache of L2 tables keyed by L1 index, evicted first-in first-out.
#[derive(Debug)]
struct L2Cache {
    capacity: usize,
    inner: Mutex<CacheInner>,
}

#[derive(Debug, Default)]
struct CacheInner {
    tables: HashMap<u64, Arc<[u64]>>,
    order: VecDeque<u64>,
}

impl L2Cache {
    fn new(capacity: usize) -> Self {
        L2Cache {
            capacity,
            inner: Mutex::default(),
        }
    }

    fn get(&self, key: u64) -> Option<Arc<[u64]>> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.tables.get(&key).cloned()
    }

    fn insert(&self, key: u64, table: Arc<[u64]>) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.tables.insert(key, table).is_some() {
            return;
        }
        inner.order.push_back(key);
        while inner.order.len() > self.capacity {
            if let Some(old) = inner.order.pop_front() {
                inner.tables.remove(&old);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().unwrap().tables.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_is_bounded() {
        let c = L2Cache::new(3);
        for k in 0..10 {
            c.insert(k, Arc::from(vec![k; 4]));
        }
        assert_eq!(c.len(), 3);
        assert!(c.get(0).is_none());
        assert_eq!(c.get(9).unwrap()[0], 9);
    }

    #[test]
    fn cap_l2_cache_bytes() {
        // 2 MiB clusters, 20 L2 tables (one per 512 GiB of disk): only 16 fit in the cache.
        let cs: usize = 2 << 20;
        let tables = 20usize;
        let mut img = super::super::header::tests::v3_header();
        img.resize(cs * (2 + tables), 0);
        img[20..24].copy_from_slice(&21u32.to_be_bytes());
        img[24..32].copy_from_slice(&((tables as u64) << 39).to_be_bytes());
        img[36..40].copy_from_slice(&(tables as u32).to_be_bytes());
        img[40..48].copy_from_slice(&(cs as u64).to_be_bytes());
        for i in 0..tables {
            let l2 = (cs * (2 + i)) as u64;
            img[cs + 8 * i..cs + 8 * i + 8].copy_from_slice(&(l2 | 1 << 63).to_be_bytes());
        }
        let file = HostFile::from_bytes("cache.qcow2", img);
        let h = super::super::header::parse(&file).unwrap();
        let map = ClusterMap::load(file, &h, (cs * (2 + tables)) as u64).unwrap();
        for i in 0..tables as u64 {
            map.walk(i << 39, (i << 39) + 512, &mut |p| {
                assert_eq!(p.mapping, Mapping::Unallocated);
                Ok(())
            })
            .unwrap();
        }
        assert_eq!(map.cache.len() as u64, MAX_L2_CACHE_BYTES / cs as u64);
    }

    #[test]
    fn subcluster_kinds() {
        assert_eq!(sub_kind(0b01, 0b10, 0), SubKind::Alloc);
        assert_eq!(sub_kind(0b01, 0b10, 1), SubKind::Zero);
        assert_eq!(sub_kind(0b01, 0b10, 2), SubKind::Unalloc);
        assert_eq!(sub_kind(1 << 31, 0, 31), SubKind::Alloc);
    }
}
