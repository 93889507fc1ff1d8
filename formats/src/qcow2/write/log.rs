//! The output file seen as an append-only log of host clusters.
//!
//! Everything after the header and L1 table (data, compressed clusters, L2
//! tables, refcount blocks, the refcount table) is appended in the order it
//! is produced, so the file is written front to back. Small appends are
//! gathered in a buffer and written with one positional write; large ones go
//! straight from the caller's buffer.

use crate::error::{Error, Result};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// Buffered bytes are written out once the buffer would grow past this.
const FLUSH_AT: usize = 4 << 20;

/// Blocks are preallocated this far ahead at a time.
const PREALLOC_STEP: u64 = 64 << 20;

/// Appends at least this long bypass the buffer (when it is empty or flushed).
const DIRECT_MIN: usize = 1 << 20;

/// Append-only writer over the data area of a new qcow2 file.
#[derive(Debug)]
pub(super) struct HostLog {
    file: Arc<File>,
    cluster_size: u64,
    /// Bytes not yet written; they belong at `buf_start..`.
    buf: Vec<u8>,
    /// Host offset of `buf[0]`; everything before it is on disk.
    buf_start: u64,
    /// The file's blocks are allocated (fallocate) up to here; `None` once
    /// preallocation failed or is not supported.
    prealloc_end: Option<u64>,
}

impl HostLog {
    /// Starts appending at `start` (cluster aligned) in `file`.
    pub(super) fn new(file: File, cluster_size: u64, start: u64) -> Self {
        HostLog {
            file: Arc::new(file),
            cluster_size,
            buf: Vec::new(),
            buf_start: start,
            prealloc_end: Some(start),
        }
    }

    /// Allocates the file's blocks ahead of the log, [`PREALLOC_STEP`] at a
    /// time and past the end of the file, so the many writes that follow do
    /// not each reserve blocks in the filesystem's delayed allocator (on
    /// ext4, raw->qcow2 copies took 0.21 s instead of 0.25 s in
    /// testdata/bench.sh). Only an optimisation: any failure turns it off.
    fn prealloc_through(&mut self, end: u64) {
        let Some(done) = self.prealloc_end else { return };
        if end <= done {
            return;
        }
        let flags = rustix::fs::FallocateFlags::KEEP_SIZE;
        self.prealloc_end = end
            .checked_next_multiple_of(PREALLOC_STEP)
            .filter(|&to| rustix::fs::fallocate(&*self.file, flags, done, to - done).is_ok());
    }

    /// Writes out the buffer and gives back blocks preallocated past `size`,
    /// the final length of the file.
    pub(super) fn finish(&mut self, size: u64) -> Result<()> {
        self.flush()?;
        if self.prealloc_end.is_some_and(|p| p > size) {
            self.file
                .set_len(size)
                .map_err(|e| Error::io("trimming the qcow2 output's preallocated blocks", e))?;
        }
        Ok(())
    }

    /// Host offset where the next append lands.
    pub(super) fn end(&self) -> u64 {
        self.buf_start + self.buf.len() as u64
    }

    /// Appends `bytes` and returns the host offset they were placed at.
    pub(super) fn append(&mut self, bytes: &[u8]) -> Result<u64> {
        let at = self.end();
        let end = at
            .checked_add(bytes.len() as u64)
            .ok_or_else(|| Error::invalid("qcow2 output grows past 2^64 bytes"))?;
        self.prealloc_through(end);
        if self.buf.len() + bytes.len() > FLUSH_AT {
            self.flush()?;
        }
        if self.buf.is_empty() && bytes.len() >= DIRECT_MIN {
            self.write_at(bytes, at)?;
            self.buf_start = at + bytes.len() as u64;
        } else {
            if self.buf.capacity() == 0 {
                self.buf.reserve_exact(FLUSH_AT);
            }
            self.buf.extend_from_slice(bytes);
        }
        Ok(at)
    }

    /// True when appending now would first write out buffered bytes.
    pub(super) fn has_buffered(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Reserves `len` bytes at the end without writing them and returns
    /// their host offset; the caller writes them through [`HostLog::sink`].
    /// Buffered bytes before them are written out first.
    pub(super) fn reserve(&mut self, len: u64) -> Result<u64> {
        let at = self.end();
        let end = at
            .checked_add(len)
            .ok_or_else(|| Error::invalid("qcow2 output grows past 2^64 bytes"))?;
        self.flush()?;
        self.prealloc_through(end);
        self.buf_start = end;
        Ok(at)
    }

    /// A handle for writing reserved ranges from other threads.
    pub(super) fn sink(&self) -> LogSink {
        LogSink {
            file: self.file.clone(),
        }
    }

    /// Appends zeros up to the next cluster boundary (nothing if aligned).
    pub(super) fn pad_to_cluster(&mut self) -> Result<()> {
        let rem = self.end() % self.cluster_size;
        if rem != 0 {
            let pad = (self.cluster_size - rem) as usize;
            if self.buf.len() + pad > FLUSH_AT {
                self.flush()?;
            }
            self.buf.resize(self.buf.len() + pad, 0);
        }
        Ok(())
    }

    /// Writes the buffered bytes to the file.
    pub(super) fn flush(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            self.write_at(&self.buf, self.buf_start)?;
            self.buf_start += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    /// Writes `bytes` at `offset`, outside the log (header, L1 table).
    pub(super) fn write_at(&self, bytes: &[u8], offset: u64) -> Result<()> {
        self.file
            .write_all_at(bytes, offset)
            .map_err(|e| Error::io(format!("writing qcow2 output at {offset:#x}"), e))
    }
}

/// Writes ranges reserved in a [`HostLog`], from any thread.
#[derive(Debug)]
pub(super) struct LogSink {
    file: Arc<File>,
}

impl crate::sink::DataSink for LogSink {
    fn write_at(&self, bytes: &[u8], offset: u64) -> Result<()> {
        self.file
            .write_all_at(bytes, offset)
            .map_err(|e| Error::io(format!("writing qcow2 output at {offset:#x}"), e))
    }
}
