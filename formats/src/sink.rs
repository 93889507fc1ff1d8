//! Writing new images: the interface between the copier and a format writer.
//!
//! The copier reads and encodes chunks on many threads (an [`ChunkEncoder`] is
//! shared), then hands the encoded chunks to one [`ImageWriter`] strictly in
//! increasing offset order. Ranges never handed over read as zero in the
//! output. Because encoding is a pure function of the input and writing is
//! ordered, output bytes are deterministic.

use crate::block::is_zero;
use crate::error::{Error, Result};
use serde::Serialize;
use std::sync::Arc;

/// How one cluster of an [`EncodedChunk`] is to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterData {
    /// All zero: the writer stores nothing (a hole or an unallocated cluster).
    Zero,
    /// Store the cluster's bytes from [`EncodedChunk::data`] as they are.
    Plain,
    /// Store these compressed bytes instead.
    Compressed(Vec<u8>),
}

/// A run of whole clusters, ready to be written.
#[derive(Debug)]
pub struct EncodedChunk {
    /// Guest offset of the first byte; a multiple of the writer's cluster size.
    pub offset: u64,
    /// The guest bytes. A multiple of the cluster size, except for a chunk
    /// that ends at the end of the disk.
    pub data: Vec<u8>,
    /// One entry per cluster (the last may be partial).
    pub clusters: Vec<ClusterData>,
}

impl EncodedChunk {
    /// The bytes of cluster `i` of this chunk.
    pub fn cluster_bytes(&self, i: usize, cluster_size: u64) -> &[u8] {
        let cs = cluster_size as usize;
        let start = i * cs;
        let end = (start + cs).min(self.data.len());
        &self.data[start..end]
    }
}

impl EncodedChunk {
    /// Byte ranges of `data` made of consecutive [`ClusterData::Plain`]
    /// clusters, so a writer can store each run with one write.
    pub fn plain_runs(&self, cluster_size: u64) -> Vec<std::ops::Range<usize>> {
        let cs = cluster_size as usize;
        let mut runs = Vec::new();
        let mut i = 0;
        while i < self.clusters.len() {
            if self.clusters[i] != ClusterData::Plain {
                i += 1;
                continue;
            }
            let first = i;
            while i < self.clusters.len() && self.clusters[i] == ClusterData::Plain {
                i += 1;
            }
            runs.push(first * cs..(i * cs).min(self.data.len()));
        }
        runs
    }

    /// Marks each cluster of `data` Zero or Plain, without compressing.
    pub fn plain(offset: u64, data: Vec<u8>, cluster_size: u64) -> EncodedChunk {
        let clusters = data
            .chunks(cluster_size as usize)
            .map(|c| {
                if is_zero(c) {
                    ClusterData::Zero
                } else {
                    ClusterData::Plain
                }
            })
            .collect();
        EncodedChunk {
            offset,
            data,
            clusters,
        }
    }
}

/// Turns guest bytes into an [`EncodedChunk`]; called from many threads at once.
pub trait ChunkEncoder: Send + Sync {
    /// Encodes `data` found at guest `offset`.
    fn encode(&self, offset: u64, data: Vec<u8>) -> Result<EncodedChunk>;
}

/// Encoder that only marks all-zero clusters; used by writers that do not compress.
#[derive(Debug, Clone, Copy)]
pub struct PlainEncoder {
    /// Granularity of zero detection (the writer's cluster size).
    pub cluster_size: u64,
}

impl ChunkEncoder for PlainEncoder {
    fn encode(&self, offset: u64, data: Vec<u8>) -> Result<EncodedChunk> {
        Ok(EncodedChunk::plain(offset, data, self.cluster_size))
    }
}

/// Positional writes into an output file, safe to issue from many threads
/// at once as long as the ranges do not overlap.
pub trait DataSink: Send + Sync {
    /// Writes all of `bytes` at host offset `offset`.
    fn write_at(&self, bytes: &[u8], offset: u64) -> Result<()>;
}

/// A plain run of an [`EncodedChunk`] that [`ImageWriter::place_chunk`]
/// placed but left for the caller to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeferredWrite {
    /// Bytes of [`EncodedChunk::data`] to store.
    pub range: std::ops::Range<usize>,
    /// Where they go in the output file.
    pub host_offset: u64,
}

/// A new image being written. Chunks arrive in strictly increasing offset order.
pub trait ImageWriter: Send {
    /// Unit of allocation; chunk offsets and lengths are multiples of it.
    fn cluster_size(&self) -> u64;

    /// The encoder workers use to prepare chunks for this writer.
    fn encoder(&self) -> Arc<dyn ChunkEncoder>;

    /// Stores one encoded chunk.
    fn write_chunk(&mut self, chunk: &EncodedChunk) -> Result<()>;

    /// Where plain data may be stored by the caller, from many threads at
    /// once; `None` (the default) when the writer stores everything itself.
    fn data_sink(&self) -> Option<Arc<dyn DataSink>> {
        None
    }

    /// Like [`ImageWriter::write_chunk`] (same ordering rules, same resulting
    /// image), except that the writer may leave some plain runs unwritten and
    /// return them: every host offset and all metadata are decided here, in
    /// order, so the output does not depend on when or from which thread the
    /// caller then stores the returned runs through [`ImageWriter::data_sink`].
    /// The caller must store them all before [`ImageWriter::finish`]. Only
    /// writers with a data sink return runs.
    fn place_chunk(&mut self, chunk: &EncodedChunk) -> Result<Vec<DeferredWrite>> {
        self.write_chunk(chunk)?;
        Ok(Vec::new())
    }

    /// Writes remaining metadata; the image is complete afterwards. Making it
    /// durable (fsync) is the caller's decision, not the writer's.
    fn finish(self: Box<Self>) -> Result<WriteSummary>;
}

/// What a finished writer reports.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WriteSummary {
    /// Guest size of the new image (may be rounded up from the source's).
    pub virtual_size: u64,
    /// Bytes of guest data stored (clusters not left as holes).
    pub data_bytes: u64,
    /// Size of the output file.
    pub file_size: u64,
    /// Things the user should know (e.g. the size was rounded up).
    pub notes: Vec<String>,
}

/// Compression algorithm for writers that support it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Raw deflate (qcow2 "zlib", VMDK streamOptimized).
    Zlib,
    /// Zstandard (qcow2 compression_type=zstd).
    Zstd,
}

impl std::str::FromStr for Compression {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "zlib" | "deflate" => Ok(Compression::Zlib),
            "zstd" => Ok(Compression::Zstd),
            other => Err(Error::invalid(format!(
                "unknown compression '{other}' (expected zlib or zstd)"
            ))),
        }
    }
}

/// How much of the output file to allocate up front.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Preallocation {
    /// Allocate only what holds data (sparse).
    #[default]
    Off,
    /// Allocate every byte, writing zeros where needed.
    Full,
}

/// Options common to all writers; each writer rejects what it cannot honour.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Cluster size in bytes (qcow2: 512 B .. 2 MiB, power of two).
    pub cluster_size: Option<u64>,
    /// Compress data clusters.
    pub compression: Option<Compression>,
    /// Compression level; `None` picks the writer's default.
    pub compression_level: Option<i32>,
    /// Up-front allocation.
    pub preallocation: Preallocation,
    /// Format-specific subformat ("dynamic", "fixed", ...).
    pub subformat: Option<String>,
}
