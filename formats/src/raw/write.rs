//! Raw output: data clusters written in place, zero clusters left as holes.

use crate::error::{Error, Result};
use crate::sink::{
    ChunkEncoder, EncodedChunk, ImageWriter, PlainEncoder, Preallocation, WriteOptions, WriteSummary,
};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// Granularity of hole detection in raw output (qemu-img's default `-S 4k`).
const RAW_GRANULE: u64 = 4096;

/// Writes a raw image into a fresh file.
#[derive(Debug)]
pub struct RawWriter {
    file: File,
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
            file,
            size,
            data_bytes: 0,
        })
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
        for run in chunk.plain_runs(RAW_GRANULE) {
            let at = chunk.offset + run.start as u64;
            self.file
                .write_all_at(&chunk.data[run.clone()], at)
                .map_err(|e| Error::io(format!("writing raw output at {at:#x}"), e))?;
            self.data_bytes += run.len() as u64;
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<WriteSummary> {
        let file_size = self.file.metadata().map(|m| m.len()).unwrap_or(self.size);
        Ok(WriteSummary {
            virtual_size: self.size,
            data_bytes: self.data_bytes,
            file_size,
            notes: Vec::new(),
        })
    }
}
