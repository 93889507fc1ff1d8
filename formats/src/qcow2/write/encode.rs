//! Per-cluster encoding for qcow2 output, run on the copier's worker threads.
//!
//! Each cluster becomes [`ClusterData::Zero`] (left unallocated), `Plain`, or
//! `Compressed` when compression is on and the result is smaller than a
//! cluster. zlib clusters are raw deflate streams with a 4 KiB window (the
//! window qemu inflates with); zstd clusters are one zstd frame each. A
//! partial last cluster is compressed as a whole cluster padded with zeros,
//! because readers decompress exactly one cluster's worth of bytes.

use crate::block::is_zero;
use crate::error::{Error, Result};
use crate::sink::{ChunkEncoder, ClusterData, Compression, EncodedChunk};
use std::fmt;
use std::sync::Mutex;

/// Base-2 log of the deflate window qemu's qcow2 driver inflates with.
const ZLIB_WINDOW_BITS: u8 = 12;

/// zlib level used when none is given: fastest, since the copier is
/// usually CPU bound when compressing (see the report in the tests).
pub(super) const DEFAULT_ZLIB_LEVEL: i32 = 1;

/// zstd level used when none is given.
pub(super) const DEFAULT_ZSTD_LEVEL: i32 = 1;

/// Output space that any input of `len` bytes compresses into, with either
/// codec. zlib level 1 uses fixed Huffman codes only, where a byte may cost
/// 9 bits, hence the eighth.
fn compress_bound(len: usize) -> usize {
    len + len / 8 + 1024
}

/// A compression algorithm with its level, as validated for qcow2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Codec {
    /// Raw deflate, window bits 12, level 0..=9.
    Zlib(u32),
    /// One zstd frame per cluster.
    Zstd(i32),
}

impl Codec {
    /// Validates the user's choice of algorithm and level.
    pub(super) fn from_options(
        compression: Option<Compression>,
        level: Option<i32>,
    ) -> Result<Option<Codec>> {
        match (compression, level) {
            (None, None) => Ok(None),
            (None, Some(_)) => Err(Error::invalid(
                "a compression level was given without a compression algorithm",
            )),
            (Some(Compression::Zlib), level) => {
                let level = level.unwrap_or(DEFAULT_ZLIB_LEVEL);
                if !(1..=9).contains(&level) {
                    return Err(Error::invalid(format!(
                        "zlib compression level {level} (expected 1..=9)"
                    )));
                }
                Ok(Some(Codec::Zlib(level as u32)))
            }
            (Some(Compression::Zstd), level) => {
                let level = level.unwrap_or(DEFAULT_ZSTD_LEVEL);
                if !(1..=22).contains(&level) {
                    return Err(Error::invalid(format!(
                        "zstd compression level {level} (expected 1..=22)"
                    )));
                }
                Ok(Some(Codec::Zstd(level)))
            }
        }
    }
}

/// A reusable compression context with its scratch output buffer.
enum Compressor {
    Zlib(Box<flate2::Compress>),
    Zstd(Box<zstd::bulk::Compressor<'static>>),
}

impl Compressor {
    fn new(codec: Codec) -> Result<Self> {
        Ok(match codec {
            Codec::Zlib(level) => Compressor::Zlib(Box::new(flate2::Compress::new_with_window_bits(
                flate2::Compression::new(level),
                false,
                ZLIB_WINDOW_BITS,
            ))),
            Codec::Zstd(level) => Compressor::Zstd(Box::new(
                zstd::bulk::Compressor::new(level).map_err(|e| Error::io("creating a zstd compressor", e))?,
            )),
        })
    }

    /// Compresses `input` into `out`; returns the length, or `None` when the
    /// result does not fit in `out`.
    fn compress(&mut self, input: &[u8], out: &mut [u8]) -> Option<usize> {
        match self {
            Compressor::Zlib(c) => {
                c.reset();
                match c.compress(input, out, flate2::FlushCompress::Finish) {
                    Ok(flate2::Status::StreamEnd) => usize::try_from(c.total_out()).ok(),
                    _ => None,
                }
            }
            // Any error here means the frame did not fit in `out`.
            Compressor::Zstd(c) => c.compress_to_buffer(input, out).ok(),
        }
    }
}

/// Encoder shared by the copier's threads; keeps a pool of compressors so
/// each thread reuses a context instead of building one per chunk.
pub(super) struct Qcow2Encoder {
    cluster_size: usize,
    codec: Option<Codec>,
    pool: Mutex<Vec<Compressor>>,
}

impl fmt::Debug for Qcow2Encoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Qcow2Encoder")
            .field("cluster_size", &self.cluster_size)
            .field("codec", &self.codec)
            .finish_non_exhaustive()
    }
}

impl Qcow2Encoder {
    /// An encoder for `cluster_size`-byte clusters, compressing with `codec`.
    pub(super) fn new(cluster_size: u64, codec: Option<Codec>) -> Self {
        Qcow2Encoder {
            cluster_size: cluster_size as usize,
            codec,
            pool: Mutex::new(Vec::new()),
        }
    }

    fn take_compressor(&self, codec: Codec) -> Result<Compressor> {
        let pooled = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match pooled {
            Some(c) => Ok(c),
            None => Compressor::new(codec),
        }
    }

    fn return_compressor(&self, c: Compressor) {
        self.pool.lock().unwrap_or_else(|e| e.into_inner()).push(c);
    }
}

impl ChunkEncoder for Qcow2Encoder {
    fn encode(&self, offset: u64, data: Vec<u8>) -> Result<EncodedChunk> {
        let cs = self.cluster_size;
        let Some(codec) = self.codec else {
            let clusters = data
                .chunks(cs)
                .map(|c| {
                    if is_zero(c) {
                        ClusterData::Zero
                    } else {
                        ClusterData::Plain
                    }
                })
                .collect();
            return Ok(EncodedChunk {
                offset,
                data,
                clusters,
            });
        };
        let mut compressor = self.take_compressor(codec)?;
        // Room for the worst case rather than one cluster: zlib-rs 0.6.8
        // panics in its level-1 strategy when the output buffer runs out
        // mid-stream (seen on 64 KiB clusters of random bytes), so never let
        // it run out.
        let mut scratch = vec![0u8; compress_bound(cs)];
        let mut padded = Vec::new();
        let clusters = data
            .chunks(cs)
            .map(|c| {
                if is_zero(c) {
                    return ClusterData::Zero;
                }
                let input = if c.len() == cs {
                    c
                } else {
                    padded.clear();
                    padded.extend_from_slice(c);
                    padded.resize(cs, 0);
                    &padded[..]
                };
                match compressor.compress(input, &mut scratch) {
                    Some(n) if n < cs => ClusterData::Compressed(scratch[..n].to_vec()),
                    _ => ClusterData::Plain,
                }
            })
            .collect();
        self.return_compressor(compressor);
        Ok(EncodedChunk {
            offset,
            data,
            clusters,
        })
    }
}
