//! qcow2 writer. PLACEHOLDER: being written by the qcow2-writer helper.

use crate::error::{Error, Result};
use crate::sink::{ChunkEncoder, EncodedChunk, ImageWriter, WriteOptions, WriteSummary};
use std::fs::File;
use std::sync::Arc;

/// Writes a fresh qcow2 (compat 1.1) image, streaming clusters in guest order.
#[derive(Debug)]
pub struct Qcow2Writer {}

impl Qcow2Writer {
    /// Starts a `size`-byte image in the empty `file`.
    pub fn create(file: File, size: u64, opts: &WriteOptions) -> Result<Self> {
        let _ = (file, size, opts);
        Err(Error::unsupported("qcow2 writer not written yet"))
    }
}

impl ImageWriter for Qcow2Writer {
    fn cluster_size(&self) -> u64 {
        65536
    }
    fn encoder(&self) -> Arc<dyn ChunkEncoder> {
        unimplemented!()
    }
    fn write_chunk(&mut self, _chunk: EncodedChunk) -> Result<()> {
        Err(Error::unsupported("qcow2 writer not written yet"))
    }
    fn finish(self: Box<Self>) -> Result<WriteSummary> {
        Err(Error::unsupported("qcow2 writer not written yet"))
    }
}
