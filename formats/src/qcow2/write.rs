//! qcow2 writer: a fresh version 3 (compat 1.1) image, written front to back.
//!
//! Host layout, in file order:
//!
//! 1. cluster 0: the header (written last, by `finish`);
//! 2. the L1 table, sized for the virtual size, at cluster 1;
//! 3. a log of data clusters, byte-packed compressed clusters, L2 tables and
//!    refcount blocks, each appended as soon as it is final;
//! 4. the refcount table, then the refcount blocks covering the table itself
//!    and the end of the file.
//!
//! Memory stays bounded whatever the disk size: one L2 table, one L1 cluster,
//! one refcount block and the write buffer. The refcount table (8 bytes per
//! refcount block, capped by [`MAX_REFTABLE_BYTES`]) is the only structure
//! that grows, by 4 KiB per TiB of output with 64 KiB clusters.

mod encode;
mod log;
mod refcount;

use self::encode::{Codec, Qcow2Encoder};
use self::log::HostLog;
use self::refcount::RefcountStream;
pub use self::refcount::MAX_REFTABLE_BYTES;
use crate::error::{check_limit, Error, Result};
use crate::sink::{
    ChunkEncoder, ClusterData, DataSink, DeferredWrite, EncodedChunk, ImageWriter, Preallocation,
    WriteOptions, WriteSummary,
};
use std::fs::File;
use std::sync::Arc;

/// Cluster size used when the user does not choose one.
pub const DEFAULT_CLUSTER_SIZE: u64 = 64 << 10;

/// Smallest and largest cluster sizes qcow2 allows (`cluster_bits` 9..=21).
const MIN_CLUSTER_BITS: u32 = 9;
const MAX_CLUSTER_BITS: u32 = 21;

/// Largest L1 table v2x writes, in bytes; qemu refuses to open larger ones.
pub const MAX_L1_BYTES: u64 = 32 << 20;

/// Plain runs at least this long are left to the caller by `place_chunk`
/// even when that means writing out buffered bytes first. Half the copier's
/// default chunk, so a chunk of data is always written by its worker in
/// parallel, not by the ordered stage.
const DEFER_MIN: usize = 256 << 10;

/// Bytes in a qcow2 sector; the virtual size is a whole number of them.
const SECTOR: u64 = 512;

/// "QFI\xfb".
const MAGIC: u32 = 0x5146_49fb;
/// Length of the v3 header including the compression type byte and padding.
const HEADER_LENGTH: u32 = 112;
/// Incompatible feature bit: the compression type field is not zlib.
const INCOMPAT_COMPRESSION_TYPE: u64 = 1 << 3;
/// `refcount_order` 4: 16-bit refcounts.
const REFCOUNT_ORDER: u32 = 4;

/// L1/L2 flag: the cluster's refcount is exactly one.
const FLAG_COPIED: u64 = 1 << 63;
/// L2 flag: the entry is a compressed cluster descriptor.
const FLAG_COMPRESSED: u64 = 1 << 62;
/// Host offsets in standard L1/L2 entries occupy bits 9..=55.
const MAX_HOST_OFFSET: u64 = 1 << 56;

/// Geometry fixed when the image is created.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    cluster_bits: u32,
    /// Guest size as requested by the caller.
    source_size: u64,
    /// Guest size recorded in the header (rounded up to whole sectors).
    virtual_size: u64,
    /// Entries in the L1 table.
    l1_entries: u64,
    /// Clusters the L1 table occupies, starting at cluster 1.
    l1_clusters: u64,
}

impl Geometry {
    fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Entries per L2 table (and per L1 cluster).
    fn table_entries(&self) -> u64 {
        self.cluster_size() / 8
    }

    /// Guest bytes mapped by one L2 table.
    fn l2_coverage(&self) -> u64 {
        self.cluster_size() * self.table_entries()
    }
}

/// Writes a fresh qcow2 (compat 1.1) image, streaming clusters in guest order.
pub struct Qcow2Writer {
    geo: Geometry,
    codec: Option<Codec>,
    encoder: Arc<Qcow2Encoder>,
    log: HostLog,
    refs: RefcountStream,
    /// The L2 table being filled: its L1 index and big-endian entries.
    l2_index: Option<u64>,
    l2: Vec<u8>,
    /// The L1 cluster being filled and the next L1 cluster not yet written.
    l1_cluster: u64,
    l1: Vec<u8>,
    l1_written: u64,
    /// Guest offset just past the last chunk written.
    guest_end: u64,
    data_bytes: u64,
}

impl std::fmt::Debug for Qcow2Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The table buffers are a cluster each; leave them out.
        f.debug_struct("Qcow2Writer")
            .field("geo", &self.geo)
            .field("codec", &self.codec)
            .field("host_end", &self.log.end())
            .field("l2_index", &self.l2_index)
            .field("guest_end", &self.guest_end)
            .field("data_bytes", &self.data_bytes)
            .finish_non_exhaustive()
    }
}

impl Qcow2Writer {
    /// Starts a `size`-byte image in the empty `file`.
    pub fn create(file: File, size: u64, opts: &WriteOptions) -> Result<Self> {
        if let Some(sub) = &opts.subformat {
            return Err(Error::invalid(format!("qcow2 has no subformat '{sub}'")));
        }
        if opts.preallocation == Preallocation::Full {
            return Err(Error::unsupported("full preallocation of qcow2 output"));
        }
        let cluster_size = opts.cluster_size.unwrap_or(DEFAULT_CLUSTER_SIZE);
        if !cluster_size.is_power_of_two()
            || !((1 << MIN_CLUSTER_BITS)..=(1 << MAX_CLUSTER_BITS)).contains(&cluster_size)
        {
            return Err(Error::invalid(format!(
                "qcow2 cluster size {cluster_size} (expected a power of two from 512 to 2 MiB)"
            )));
        }
        let codec = Codec::from_options(opts.compression, opts.compression_level)?;
        let cluster_bits = cluster_size.trailing_zeros();
        let virtual_size = size
            .checked_next_multiple_of(SECTOR)
            .ok_or_else(|| Error::invalid(format!("disk size {size} is too large")))?;
        let l2_coverage = cluster_size * (cluster_size / 8);
        let l1_entries = virtual_size.div_ceil(l2_coverage);
        check_limit("qcow2 L1 table bytes", l1_entries * 8, MAX_L1_BYTES)?;
        let l1_clusters = (l1_entries * 8).div_ceil(cluster_size);
        let geo = Geometry {
            cluster_bits,
            source_size: size,
            virtual_size,
            l1_entries,
            l1_clusters,
        };

        if file.metadata().is_ok_and(|m| m.is_file() && m.len() != 0) {
            // A regular file starts empty, so never-written gaps read as zero.
            // Only truncate when needed: on ext4, truncating even an empty
            // file to 0 makes its last close write out every delayed block
            // (auto_da_alloc), which made the process wait for the disk.
            file.set_len(0)
                .map_err(|e| Error::io("truncating qcow2 output", e))?;
        }
        let mut log = HostLog::new(file, cluster_size, (1 + l1_clusters) << cluster_bits);
        let mut refs = RefcountStream::new(cluster_bits);
        refs.add(0, 1 + l1_clusters)?;
        refs.place_finished(&mut log)?;
        Ok(Qcow2Writer {
            geo,
            codec,
            encoder: Arc::new(Qcow2Encoder::new(cluster_size, codec)),
            log,
            refs,
            l2_index: None,
            l2: vec![0; cluster_size as usize],
            l1_cluster: 0,
            l1: vec![0; cluster_size as usize],
            l1_written: 0,
            guest_end: 0,
            data_bytes: 0,
        })
    }

    /// Checks the copier's promises about `chunk` before trusting them.
    fn check_chunk(&self, chunk: &EncodedChunk) -> Result<()> {
        let cs = self.geo.cluster_size();
        let len = chunk.data.len() as u64;
        let end = chunk.offset.checked_add(len);
        let bad = |why: &str| {
            Err(Error::invalid(format!(
                "qcow2 writer got a chunk at {:#x} (+{len:#x}) that {why}",
                chunk.offset
            )))
        };
        if chunk.offset % cs != 0 {
            return bad("is not cluster aligned");
        }
        if chunk.offset < self.guest_end {
            return bad("is not past the previous chunk");
        }
        let Some(end) = end.filter(|e| *e <= self.geo.virtual_size) else {
            return bad("ends past the end of the disk");
        };
        if len % cs != 0 && end < self.geo.source_size {
            return bad("is not a whole number of clusters");
        }
        if chunk.clusters.len() as u64 != len.div_ceil(cs) {
            return bad("has the wrong number of cluster descriptions");
        }
        Ok(())
    }

    /// Makes the L2 table for guest offset `guest` the current one.
    fn select_l2(&mut self, guest: u64) -> Result<()> {
        let index = guest / self.geo.l2_coverage();
        if self.l2_index != Some(index) {
            self.flush_l2()?;
            self.l2_index = Some(index);
        }
        Ok(())
    }

    /// Sets the L2 entry for guest offset `guest` (whose table is current).
    fn set_l2(&mut self, guest: u64, entry: u64) {
        let slot = ((guest >> self.geo.cluster_bits) % self.geo.table_entries()) as usize * 8;
        self.l2[slot..slot + 8].copy_from_slice(&entry.to_be_bytes());
    }

    /// Appends the current L2 table, if it maps anything, and points L1 at it.
    fn flush_l2(&mut self) -> Result<()> {
        let Some(index) = self.l2_index.take() else {
            return Ok(());
        };
        if self.l2.iter().all(|b| *b == 0) {
            return Ok(());
        }
        self.log.pad_to_cluster()?;
        let at = self.log.append(&self.l2)?;
        self.refs.add(at >> self.geo.cluster_bits, 1)?;
        self.refs.place_finished(&mut self.log)?;
        self.l2.fill(0);
        check_host_offset(at)?;
        self.set_l1(index, at | FLAG_COPIED)
    }

    /// Sets L1 entry `index`, writing out L1 clusters left behind.
    fn set_l1(&mut self, index: u64, entry: u64) -> Result<()> {
        let cluster = index / self.geo.table_entries();
        if cluster != self.l1_cluster {
            self.write_l1_through(cluster)?;
            self.l1_cluster = cluster;
        }
        let slot = (index % self.geo.table_entries()) as usize * 8;
        self.l1[slot..slot + 8].copy_from_slice(&entry.to_be_bytes());
        Ok(())
    }

    /// Writes the L1 cluster being filled and zeros for untouched L1 clusters
    /// before `next`, so the table never depends on the file's old contents.
    fn write_l1_through(&mut self, next: u64) -> Result<()> {
        let cs = self.geo.cluster_size();
        let zeros = vec![0u8; cs as usize];
        while self.l1_written < next.min(self.geo.l1_clusters) {
            let c = self.l1_written;
            let bytes = if c == self.l1_cluster { &self.l1 } else { &zeros };
            self.log.write_at(bytes, (1 + c) * cs)?;
            self.l1_written += 1;
        }
        self.l1.fill(0);
        Ok(())
    }

    /// Stores a run of plain clusters (all in the current L2 table). With
    /// `defer`, the run may only be placed: then its host offset is returned
    /// and the caller writes the bytes.
    fn store_plain(&mut self, guest: u64, bytes: &[u8], defer: bool) -> Result<Option<u64>> {
        let cs = self.geo.cluster_size();
        self.log.pad_to_cluster()?;
        // Deferring costs a write of the buffered bytes (compressed clusters,
        // tables); worth it only for big runs or an empty buffer.
        let deferred = defer && (!self.log.has_buffered() || bytes.len() >= DEFER_MIN);
        let at = if deferred {
            self.log.reserve(bytes.len() as u64)?
        } else {
            self.log.append(bytes)?
        };
        self.log.pad_to_cluster()?;
        let count = (bytes.len() as u64).div_ceil(cs);
        check_host_offset(at + count * cs)?;
        self.refs.add(at >> self.geo.cluster_bits, count)?;
        self.refs.place_finished(&mut self.log)?;
        for i in 0..count {
            self.set_l2(guest + i * cs, (at + i * cs) | FLAG_COPIED);
        }
        self.data_bytes += bytes.len() as u64;
        Ok(deferred.then_some(at))
    }

    /// Stores or places `chunk`; with `defer`, returns the plain runs left
    /// for the caller to write.
    fn store_chunk(&mut self, chunk: &EncodedChunk, defer: bool) -> Result<Vec<DeferredWrite>> {
        self.check_chunk(chunk)?;
        let cs = self.geo.cluster_size();
        let per_l2 = self.geo.table_entries();
        let first_cluster = chunk.offset >> self.geo.cluster_bits;
        let n = chunk.clusters.len();
        let mut deferred = Vec::new();
        let mut i = 0;
        while i < n {
            let guest = chunk.offset + i as u64 * cs;
            match &chunk.clusters[i] {
                ClusterData::Zero => i += 1,
                ClusterData::Compressed(bytes) => {
                    self.select_l2(guest)?;
                    self.store_compressed(guest, bytes)?;
                    i += 1;
                }
                ClusterData::Plain => {
                    // A run of plain clusters, cut where the L2 table changes.
                    let l2_end = ((first_cluster + i as u64) / per_l2 + 1) * per_l2;
                    let mut j = i + 1;
                    while j < n
                        && chunk.clusters[j] == ClusterData::Plain
                        && first_cluster + (j as u64) < l2_end
                    {
                        j += 1;
                    }
                    let range = i * cs as usize..(j * cs as usize).min(chunk.data.len());
                    self.select_l2(guest)?;
                    if let Some(host_offset) = self.store_plain(guest, &chunk.data[range.clone()], defer)? {
                        deferred.push(DeferredWrite { range, host_offset });
                    }
                    i = j;
                }
            }
        }
        self.guest_end = chunk.offset + chunk.data.len() as u64;
        Ok(deferred)
    }

    /// Stores one compressed cluster, packed right after the previous bytes.
    fn store_compressed(&mut self, guest: u64, bytes: &[u8]) -> Result<()> {
        let cs = self.geo.cluster_size();
        if bytes.is_empty() || bytes.len() as u64 >= cs {
            return Err(Error::invalid(format!(
                "compressed cluster at {guest:#x} has {} bytes (cluster size {cs})",
                bytes.len()
            )));
        }
        // A host cluster shared by very many tiny compressed clusters would
        // overflow its 16-bit refcount; start a fresh one first.
        let current = self.log.end() >> self.geo.cluster_bits;
        if self.log.end() % cs != 0 && self.refs.get(current) == Some(u16::MAX) {
            self.log.pad_to_cluster()?;
        }
        let at = self.log.append(bytes)?;
        let last = at + bytes.len() as u64 - 1;
        let first_cluster = at >> self.geo.cluster_bits;
        let last_cluster = last >> self.geo.cluster_bits;
        self.refs.add(first_cluster, last_cluster - first_cluster + 1)?;
        self.refs.place_finished(&mut self.log)?;
        let entry = compressed_descriptor(self.geo.cluster_bits, at, bytes.len() as u64)?;
        self.set_l2(guest, entry);
        // Guest bytes, as for plain clusters; the disk may end mid-cluster.
        self.data_bytes += cs.min(self.geo.source_size.saturating_sub(guest));
        Ok(())
    }

    /// The header cluster, describing the finished image.
    fn header(&self, reftable_offset: u64, reftable_clusters: u64) -> Result<Vec<u8>> {
        let mut h = vec![0u8; self.geo.cluster_size() as usize];
        let mut put = |at: usize, bytes: &[u8]| h[at..at + bytes.len()].copy_from_slice(bytes);
        put(0, &MAGIC.to_be_bytes());
        put(4, &3u32.to_be_bytes());
        put(20, &self.geo.cluster_bits.to_be_bytes());
        put(24, &self.geo.virtual_size.to_be_bytes());
        let l1_entries =
            u32::try_from(self.geo.l1_entries).map_err(|_| Error::invalid("qcow2 L1 table too large"))?;
        put(36, &l1_entries.to_be_bytes());
        put(40, &self.geo.cluster_size().to_be_bytes());
        put(48, &reftable_offset.to_be_bytes());
        let reftable_clusters =
            u32::try_from(reftable_clusters).map_err(|_| Error::invalid("qcow2 refcount table too large"))?;
        put(56, &reftable_clusters.to_be_bytes());
        let (incompatible, compression_type) = match self.codec {
            Some(Codec::Zstd(_)) => (INCOMPAT_COMPRESSION_TYPE, 1u8),
            _ => (0, 0),
        };
        put(72, &incompatible.to_be_bytes());
        put(96, &REFCOUNT_ORDER.to_be_bytes());
        put(100, &HEADER_LENGTH.to_be_bytes());
        put(104, &[compression_type]);
        // Header extensions start at HEADER_LENGTH; the zero bytes there are
        // the end-of-extensions marker (type 0, length 0).
        Ok(h)
    }
}

/// Fails if a standard L1/L2 entry cannot hold host offset `end`.
fn check_host_offset(end: u64) -> Result<()> {
    if end > MAX_HOST_OFFSET {
        return Err(Error::invalid("qcow2 output exceeds 64 PiB"));
    }
    Ok(())
}

/// The L2 entry for `len` compressed bytes at host offset `at`.
///
/// The low `x = 62 - (cluster_bits - 8)` bits hold the host offset; bits
/// `x..62` the number of 512-byte sectors the data touches beyond the first.
fn compressed_descriptor(cluster_bits: u32, at: u64, len: u64) -> Result<u64> {
    let x = 62 - (cluster_bits - 8);
    let first_sector = at / SECTOR;
    let last_sector = (at + len - 1) / SECTOR;
    let extra = last_sector - first_sector;
    if at >= 1 << x || extra >= 1 << (cluster_bits - 8) {
        return Err(Error::invalid(format!(
            "compressed cluster at host {at:#x} (+{len}) cannot be described in qcow2"
        )));
    }
    Ok(FLAG_COMPRESSED | (extra << x) | at)
}

impl ImageWriter for Qcow2Writer {
    fn cluster_size(&self) -> u64 {
        self.geo.cluster_size()
    }

    fn encoder(&self) -> Arc<dyn ChunkEncoder> {
        self.encoder.clone()
    }

    fn write_chunk(&mut self, chunk: &EncodedChunk) -> Result<()> {
        let deferred = self.store_chunk(chunk, false)?;
        debug_assert!(deferred.is_empty());
        Ok(())
    }

    fn data_sink(&self) -> Option<Arc<dyn DataSink>> {
        Some(Arc::new(self.log.sink()))
    }

    fn place_chunk(&mut self, chunk: &EncodedChunk) -> Result<Vec<DeferredWrite>> {
        self.store_chunk(chunk, true)
    }

    fn finish(mut self: Box<Self>) -> Result<WriteSummary> {
        self.flush_l2()?;
        self.write_l1_through(u64::MAX)?;
        let refs = std::mem::replace(&mut self.refs, RefcountStream::new(self.geo.cluster_bits));
        let (reftable_offset, reftable_clusters) = refs.finish(&mut self.log)?;
        let file_size = self.log.end();
        let header = self.header(reftable_offset, reftable_clusters)?;
        self.log.write_at(&header, 0)?;
        self.log.finish(file_size)?;
        let mut notes = Vec::new();
        if self.geo.virtual_size != self.geo.source_size {
            notes.push(format!(
                "qcow2 virtual size rounded up from {} to {} bytes (whole 512-byte sectors)",
                self.geo.source_size, self.geo.virtual_size
            ));
        }
        Ok(WriteSummary {
            virtual_size: self.geo.virtual_size,
            data_bytes: self.data_bytes,
            file_size,
            notes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_descriptor_layout() {
        // 64 KiB clusters: x = 62 - 8 = 54; offset in bits 0..54.
        let e = compressed_descriptor(16, 0x1_2345, 1000).unwrap();
        assert_eq!(e & FLAG_COMPRESSED, FLAG_COMPRESSED);
        assert_eq!(e & FLAG_COPIED, 0);
        assert_eq!(e & ((1 << 54) - 1), 0x1_2345);
        // 0x12345 is 0x145 into its sector; 0x145 + 1000 - 1 = 1324 -> 2 extra.
        assert_eq!((e >> 54) & 0xff, 2);
        // 512-byte clusters: x = 61, one bit of sector count.
        let e = compressed_descriptor(9, 0x200 + 511, 2).unwrap();
        assert_eq!(e >> 61 & 1, 1);
        assert_eq!(e & ((1 << 61) - 1), 0x3ff);
        // 2 MiB clusters: x = 49; offsets must stay below 2^49.
        assert!(compressed_descriptor(21, 1 << 49, 10).is_err());
        assert!(compressed_descriptor(21, (1 << 49) - 512, 10).is_ok());
    }
}
