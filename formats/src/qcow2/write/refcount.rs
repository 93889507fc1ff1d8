//! Streaming refcounts for a qcow2 file written front to back.
//!
//! Host clusters are only ever allocated at the end of the file, so once the
//! allocation point passes the last cluster a refcount block covers, that
//! block is final. Only the block covering the allocation point is kept in
//! memory; finished blocks are appended to the file as they complete, and the
//! refcount table (one `u64` per block) is appended by [`RefcountStream::finish`].
//! Refcounts are 16 bits wide (`refcount_order` 4).

use super::log::HostLog;
use crate::error::{check_limit, Error, Result};
use std::collections::VecDeque;

/// Largest refcount table v2x writes, in bytes; qemu refuses larger ones.
pub const MAX_REFTABLE_BYTES: u64 = 8 << 20;

/// Bytes per refcount entry (`1 << refcount_order` bits).
const REFCOUNT_BYTES: u64 = 2;

/// Refcounts of the host clusters, kept one refcount block at a time.
#[derive(Debug)]
pub(super) struct RefcountStream {
    cluster_bits: u32,
    /// Clusters covered by one refcount block.
    per_block: u64,
    /// Index of the block whose counts are in `counts`.
    window: u64,
    /// Counts of the clusters `window * per_block ..`.
    counts: Vec<u16>,
    /// Finished blocks not yet placed in the file: (block index, bytes).
    finished: VecDeque<(u64, Vec<u8>)>,
    /// Host offset of every block placed so far (0 = not placed yet).
    table: Vec<u64>,
}

impl RefcountStream {
    /// Starts with every cluster unreferenced.
    pub(super) fn new(cluster_bits: u32) -> Self {
        let per_block = (1u64 << cluster_bits) / REFCOUNT_BYTES;
        RefcountStream {
            cluster_bits,
            per_block,
            window: 0,
            counts: vec![0; per_block as usize],
            finished: VecDeque::new(),
            table: Vec::new(),
        }
    }

    fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Current refcount of `cluster`, if it lies in the block kept in memory.
    pub(super) fn get(&self, cluster: u64) -> Option<u16> {
        let first = self.window * self.per_block;
        let idx = cluster.checked_sub(first)?;
        self.counts.get(usize::try_from(idx).ok()?).copied()
    }

    /// Adds one reference to each of `count` clusters starting at `first`.
    /// Clusters must not lie before the block kept in memory.
    pub(super) fn add(&mut self, first: u64, count: u64) -> Result<()> {
        let end = first
            .checked_add(count)
            .ok_or_else(|| Error::invalid("qcow2 refcount range overflows"))?;
        let mut c = first;
        while c < end {
            let window_start = self.window * self.per_block;
            let window_end = window_start + self.per_block;
            if c < window_start {
                return Err(Error::invalid(format!(
                    "qcow2 writer: refcount for cluster {c} arrived after its block was written"
                )));
            }
            if c >= window_end {
                check_limit(
                    "qcow2 refcount table bytes",
                    (c / self.per_block + 1) * 8,
                    MAX_REFTABLE_BYTES,
                )?;
                self.roll()?;
                continue;
            }
            let stop = end.min(window_end);
            for slot in &mut self.counts[(c - window_start) as usize..(stop - window_start) as usize] {
                *slot = slot.checked_add(1).ok_or_else(|| {
                    Error::invalid("qcow2 writer: a host cluster's refcount overflows 16 bits")
                })?;
            }
            c = stop;
        }
        Ok(())
    }

    /// Closes the block in memory and moves on to the next one.
    fn roll(&mut self) -> Result<()> {
        let mut block = Vec::with_capacity(self.cluster_size() as usize);
        for count in &self.counts {
            block.extend_from_slice(&count.to_be_bytes());
        }
        self.finished.push_back((self.window, block));
        self.counts.fill(0);
        self.window += 1;
        self.table.push(0);
        check_limit(
            "qcow2 refcount table bytes",
            self.table.len() as u64 * 8,
            MAX_REFTABLE_BYTES,
        )
    }

    /// Appends every finished block to `log`, counting the clusters they
    /// occupy (which may in turn finish more blocks).
    pub(super) fn place_finished(&mut self, log: &mut HostLog) -> Result<()> {
        while let Some((index, block)) = self.finished.pop_front() {
            log.pad_to_cluster()?;
            let at = log.append(&block)?;
            self.table[index as usize] = at;
            self.add(at >> self.cluster_bits, 1)?;
        }
        Ok(())
    }

    /// Appends the remaining refcount blocks and the refcount table to `log`.
    /// Returns the table's host offset and its length in clusters.
    ///
    /// The table and the last blocks need refcounts of their own, so their
    /// sizes are found by iterating to a fixed point first; then everything
    /// is counted and laid out as planned: table, then the blocks in order.
    pub(super) fn finish(mut self, log: &mut HostLog) -> Result<(u64, u64)> {
        self.place_finished(log)?;
        log.pad_to_cluster()?;
        let cs = self.cluster_size();
        let start = log.end() >> self.cluster_bits;
        let (mut table_clusters, mut blocks) = (0u64, 0u64);
        loop {
            let end = start + table_clusters + blocks;
            let total_blocks = end.div_ceil(self.per_block);
            let need_blocks = total_blocks - self.window;
            let need_table = (total_blocks * 8).div_ceil(cs);
            if (need_table, need_blocks) == (table_clusters, blocks) {
                break;
            }
            table_clusters = need_table;
            blocks = need_blocks;
        }
        check_limit(
            "qcow2 refcount table bytes",
            table_clusters * cs,
            MAX_REFTABLE_BYTES,
        )?;
        self.add(start, table_clusters + blocks)?;
        self.roll()?;
        if self.finished.len() as u64 != blocks {
            return Err(Error::invalid(format!(
                "qcow2 writer: planned {blocks} final refcount blocks, have {}",
                self.finished.len()
            )));
        }
        let first_block = start + table_clusters;
        for (i, (index, _)) in self.finished.iter().enumerate() {
            self.table[*index as usize] = (first_block + i as u64) << self.cluster_bits;
        }
        let mut table = Vec::with_capacity((table_clusters * cs) as usize);
        for offset in &self.table {
            table.extend_from_slice(&offset.to_be_bytes());
        }
        table.resize((table_clusters * cs) as usize, 0);
        let table_offset = log.append(&table)?;
        for (_, block) in &self.finished {
            log.append(block)?;
        }
        if log.end() != (first_block + blocks) << self.cluster_bits {
            return Err(Error::invalid("qcow2 writer: refcount layout mismatch"));
        }
        Ok((table_offset, table_clusters))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be16(b: &[u8], i: usize) -> u16 {
        u16::from_be_bytes([b[2 * i], b[2 * i + 1]])
    }

    /// With 512-byte clusters (256 refcounts per block), allocate clusters
    /// up to just below, at, and just past block boundaries and check that
    /// every cluster of the finished file has refcount exactly 1.
    #[test]
    fn every_cluster_counted_once_around_block_boundaries() {
        for used in [
            1u64,
            2,
            254,
            255,
            256,
            257,
            511,
            512,
            513,
            64 * 256 - 3,
            64 * 256 + 5,
        ] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("r");
            let file = std::fs::File::create(&path).unwrap();
            let mut log = HostLog::new(file, 512, 512);
            let mut refs = RefcountStream::new(9);
            refs.add(0, 1).unwrap();
            for _ in 1..used {
                let at = log.append(&[1u8; 512]).unwrap();
                refs.add(at >> 9, 1).unwrap();
                refs.place_finished(&mut log).unwrap();
            }
            let (table_at, table_clusters) = refs.finish(&mut log).unwrap();
            log.flush().unwrap();
            let bytes = std::fs::read(&path).unwrap();
            let clusters = log.end() / 512;
            assert_eq!(bytes.len() as u64, clusters * 512);
            let table = &bytes[table_at as usize..(table_at + table_clusters * 512) as usize];
            for c in 0..clusters {
                let entry = (c / 256) as usize;
                let block = u64::from_be_bytes(table[entry * 8..entry * 8 + 8].try_into().unwrap());
                assert_ne!(block, 0, "used={used}: no block for cluster {c}");
                let b = &bytes[block as usize..block as usize + 512];
                assert_eq!(be16(b, (c % 256) as usize), 1, "used={used} cluster {c}");
            }
            // Nothing past the end is counted.
            let last_block = (clusters - 1) / 256;
            let block = u64::from_be_bytes(
                table[last_block as usize * 8..last_block as usize * 8 + 8]
                    .try_into()
                    .unwrap(),
            );
            if clusters % 256 != 0 {
                for i in (clusters % 256) as usize..256 {
                    assert_eq!(be16(&bytes[block as usize..], i), 0);
                }
            }
        }
    }

    /// MAX_REFTABLE_BYTES: 8 MiB of table is 1Mi blocks; with 512-byte
    /// clusters (256 per block) a cluster past 2^28 needs one more.
    #[test]
    fn reftable_cap() {
        let mut refs = RefcountStream::new(9);
        refs.add(0, 1).unwrap();
        match refs.add(256 << 20, 1) {
            Err(Error::LimitExceeded { what, value, max }) => {
                assert!(what.contains("refcount table"));
                assert_eq!((value, max), (MAX_REFTABLE_BYTES + 8, MAX_REFTABLE_BYTES));
            }
            other => panic!("expected LimitExceeded, got {other:?}"),
        }
    }

    #[test]
    fn refcount_overflow_is_an_error() {
        let mut refs = RefcountStream::new(9);
        for _ in 0..u16::MAX {
            refs.add(3, 1).unwrap();
        }
        assert_eq!(refs.get(3), Some(u16::MAX));
        assert!(refs.add(3, 1).is_err());
    }
}
