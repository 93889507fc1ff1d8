//! A `Read + Seek` cursor over a [`BlockSource`], for filesystem crates that
//! want a stream (`ntfs`, `fatfs`). One cursor is made per operation, so the
//! filesystem object stays `Send + Sync` with no shared mutable position.
//!
//! Every cursor has a read budget: a hostile image can make a crate walk a
//! cyclic chain forever, and the budget turns that into an error.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::Arc;
use v2x_formats::block::BlockSource;

/// Bytes one cached block holds (crates read in tiny pieces).
const CACHE_BLOCK: u64 = 4096;

/// Message of the error raised when the read budget runs out.
pub const BUDGET_EXHAUSTED: &str = "read budget exhausted (a cyclic on-disk chain?)";

/// A positioned reader over a block source with a one-block cache.
pub struct SourceCursor {
    source: Arc<dyn BlockSource>,
    pos: u64,
    cache_at: u64,
    cache: Vec<u8>,
    budget: u64,
    writable: bool,
}

impl SourceCursor {
    /// A cursor at offset 0 that may read at most `budget` bytes from `source`.
    pub fn new(source: Arc<dyn BlockSource>, budget: u64) -> Self {
        Self {
            source,
            pos: 0,
            cache_at: u64::MAX,
            cache: Vec::new(),
            budget,
            writable: false,
        }
    }

    /// A cursor whose writes go to `source` through
    /// [`BlockSource::write_through`] (only an overlay, or a view of one,
    /// accepts them).
    pub fn writable(source: Arc<dyn BlockSource>, budget: u64) -> Self {
        Self {
            writable: true,
            ..Self::new(source, budget)
        }
    }

    fn fill(&mut self, block: u64) -> io::Result<()> {
        let size = self.source.size();
        let len = CACHE_BLOCK.min(size.saturating_sub(block));
        if len > self.budget {
            return Err(io::Error::other(BUDGET_EXHAUSTED));
        }
        self.budget -= len;
        self.cache.resize(len as usize, 0);
        self.source
            .read_at(block, &mut self.cache)
            .map_err(io::Error::other)?;
        self.cache_at = block;
        Ok(())
    }
}

impl Read for SourceCursor {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // Filesystems never read at or past their end, so a structure that
        // points there is damaged; saying so beats a silent empty read.
        if self.pos >= self.source.size() {
            return Err(io::Error::other(v2x_formats::Error::corrupt(
                "on-disk pointer leads past the end of the volume",
                self.pos,
            )));
        }
        let block = self.pos - self.pos % CACHE_BLOCK;
        if block != self.cache_at {
            self.fill(block)?;
        }
        let within = (self.pos - block) as usize;
        let n = buf.len().min(self.cache.len().saturating_sub(within));
        buf[..n].copy_from_slice(&self.cache[within..within + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for SourceCursor {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.source.size().checked_add_signed(d),
        };
        self.pos = new.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek out of range"))?;
        Ok(self.pos)
    }
}

/// Writes fail unless the cursor was made [`SourceCursor::writable`]: guest
/// filesystems are read-only except through the conversion overlay.
impl Write for SourceCursor {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.writable {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "guest filesystem is opened read-only",
            ));
        }
        if buf.is_empty() {
            return Ok(0);
        }
        self.source
            .write_through(self.pos, buf)
            .map_err(io::Error::other)?;
        // The cached block may hold what was just overwritten.
        let end = self.pos + buf.len() as u64;
        if self.cache_at != u64::MAX && self.cache_at < end && self.pos < self.cache_at + CACHE_BLOCK {
            self.cache_at = u64::MAX;
        }
        self.pos = end;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use v2x_formats::file::HostFile;
    use v2x_formats::raw::RawImage;

    fn source(bytes: Vec<u8>) -> Arc<dyn BlockSource> {
        Arc::new(RawImage::new(HostFile::from_bytes("t", bytes)).unwrap())
    }

    #[test]
    fn reads_across_blocks_and_refuses_the_end() {
        let data: Vec<u8> = (0..10000u32).map(|i| i as u8).collect();
        let mut c = SourceCursor::new(source(data.clone()), u64::MAX);
        c.seek(SeekFrom::Start(4000)).unwrap();
        let mut buf = vec![0; 6000];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(buf, data[4000..]);
        // Reading at the end means an on-disk pointer went past it.
        assert!(c.read(&mut buf).is_err());
    }

    #[test]
    fn budget_stops_endless_reading() {
        let mut c = SourceCursor::new(source(vec![0; 8192]), 4096);
        let mut buf = vec![0; 4096];
        c.read_exact(&mut buf).unwrap();
        c.seek(SeekFrom::Start(4096)).unwrap();
        let e = c.read(&mut buf).unwrap_err();
        assert!(e.to_string().contains("budget"), "{e}");
    }

    #[test]
    fn writes_are_refused() {
        let mut c = SourceCursor::new(source(vec![0; 512]), u64::MAX);
        assert!(c.write(b"x").is_err());
    }
}
