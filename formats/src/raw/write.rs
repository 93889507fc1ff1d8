//! Raw output: data clusters written in place, zero clusters left as holes.

use crate::error::{Error, Result};
use crate::sink::{
    ChunkEncoder, DataSink, DeferredWrite, EncodedChunk, ImageWriter, PlainEncoder, Preallocation,
    WriteOptions, WriteSummary,
};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// Granularity of hole detection in raw output (qemu-img's default `-S 4k`).
const RAW_GRANULE: u64 = 4096;

/// Writes a raw image into a fresh file.
#[derive(Debug)]
pub struct RawWriter {
    file: Arc<RawFile>,
    size: u64,
    data_bytes: u64,
}

impl RawWriter {
    /// Prepares `file` (empty, or a block device) to hold a `size`-byte disk.
    pub fn create(file: File, size: u64, opts: &WriteOptions) -> Result<Self> {
        if opts.compression.is_some() {
            return Err(Error::invalid("raw output cannot be compressed"));
        }
        if opts.cluster_size.is_some() {
            return Err(Error::invalid("raw output has no cluster size"));
        }
        let is_file = file.metadata().map(|m| m.is_file()).unwrap_or(false);
        if is_file {
            file.set_len(size)
                .map_err(|e| Error::io("sizing raw output", e))?;
            if opts.preallocation == Preallocation::Full {
                preallocate(&file, size)?;
            }
        }
        Ok(RawWriter {
            file: Arc::new(RawFile(file)),
            size,
            data_bytes: 0,
        })
    }
}

/// The output file, shared with the copier's threads.
#[derive(Debug)]
struct RawFile(File);

impl DataSink for RawFile {
    fn write_at(&self, bytes: &[u8], offset: u64) -> Result<()> {
        self.0
            .write_all_at(bytes, offset)
            .map_err(|e| Error::io(format!("writing raw output at {offset:#x}"), e))
    }
}

/// Allocates every byte of `file`, by fallocate where the filesystem can.
fn preallocate(file: &File, size: u64) -> Result<()> {
    if size == 0 {
        return Ok(());
    }
    if rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, size).is_ok() {
        return Ok(());
    }
    let zeros = vec![0u8; 1 << 20];
    let mut off = 0;
    while off < size {
        let n = (size - off).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], off)
            .map_err(|e| Error::io("preallocating raw output", e))?;
        off += n as u64;
    }
    Ok(())
}

impl ImageWriter for RawWriter {
    fn cluster_size(&self) -> u64 {
        RAW_GRANULE
    }

    fn encoder(&self) -> Arc<dyn ChunkEncoder> {
        Arc::new(PlainEncoder {
            cluster_size: RAW_GRANULE,
        })
    }

    fn write_chunk(&mut self, chunk: &EncodedChunk) -> Result<()> {
        for w in self.place_chunk(chunk)? {
            self.file.write_at(&chunk.data[w.range], w.host_offset)?;
        }
        Ok(())
    }

    fn data_sink(&self) -> Option<Arc<dyn DataSink>> {
        Some(self.file.clone())
    }

    fn place_chunk(&mut self, chunk: &EncodedChunk) -> Result<Vec<DeferredWrite>> {
        let runs = chunk.plain_runs(RAW_GRANULE);
        let mut out = Vec::with_capacity(runs.len());
        for range in runs {
            self.data_bytes += range.len() as u64;
            let host_offset = chunk.offset + range.start as u64;
            out.push(DeferredWrite { range, host_offset });
        }
        Ok(out)
    }

    fn finish(self: Box<Self>) -> Result<WriteSummary> {
        let file_size = self.file.0.metadata().map(|m| m.len()).unwrap_or(self.size);
        Ok(WriteSummary {
            virtual_size: self.size,
            data_bytes: self.data_bytes,
            file_size,
            notes: Vec::new(),
        })
    }
}
