//! Guest runs: the result of a table lookup, before any data is read.
//!
//! VHD, VHDX and VDI all translate a guest range into runs that are either
//! stored at some file offset, known zero, unallocated, or left to a parent
//! disk. Reading and mapping are then the same for all three, so they live
//! here: contiguous stored runs become one positional read each.

use crate::block::{BlockSource, Extent, ExtentKind, ExtentList};
use crate::error::{Error, Result};
use crate::file::HostFile;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Sector bitmaps of VHD and VHDX blocks read so far, by block number, at
/// most `max_entries` of them: when full, the whole cache is dropped. The
/// lock is never held while a bitmap is read from the file.
#[derive(Debug)]
pub(crate) struct BitmapCache {
    max_entries: usize,
    map: Mutex<HashMap<u64, Arc<Vec<u8>>>>,
}

impl BitmapCache {
    /// An empty cache holding at most `max_entries` bitmaps (at least one).
    pub(crate) fn new(max_entries: usize) -> Self {
        BitmapCache {
            max_entries: max_entries.max(1),
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The bitmap of `block`, from the cache or else from `load`.
    pub(crate) fn get_or_load(
        &self,
        block: u64,
        load: impl FnOnce() -> Result<Vec<u8>>,
    ) -> Result<Arc<Vec<u8>>> {
        if let Some(b) = self.lock().get(&block) {
            return Ok(b.clone());
        }
        let b = Arc::new(load()?);
        let mut map = self.lock();
        if map.len() >= self.max_entries {
            map.clear();
        }
        map.insert(block, b.clone());
        Ok(b)
    }

    /// Number of bitmaps held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<Vec<u8>>>> {
        // A panic elsewhere cannot leave the map inconsistent: recover it.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Something an image's stored bytes can be read from (a host file, or a
/// host file seen through a replayed VHDX log).
pub(crate) trait ReadAt: Send + Sync {
    /// Reads exactly `buf.len()` bytes at file offset `offset`.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;

    /// Length of the file in bytes.
    fn len(&self) -> u64;

    /// Hint: bytes `[offset, offset + len)` will be read soon (default: ignored).
    fn prefetch(&self, offset: u64, len: u64) {
        let _ = (offset, len);
    }

    /// Reads a table of `len` bytes at `offset`, checking that it lies in
    /// the file *before* allocating, so a lying header cannot make us
    /// allocate up to a cap for a tiny file.
    fn read_table(&self, offset: u64, len: u64, what: &str) -> Result<Vec<u8>> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len() => {
                let mut v = vec![0u8; len as usize];
                self.read_exact_at(offset, &mut v)?;
                Ok(v)
            }
            _ => Err(Error::corrupt(
                format!("{what} ({len} bytes at {offset:#x}) lies past the end of the file"),
                offset,
            )),
        }
    }
}

impl ReadAt for HostFile {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        HostFile::read_exact_at(self, offset, buf)
    }

    fn len(&self) -> u64 {
        HostFile::len(self)
    }

    fn prefetch(&self, offset: u64, len: u64) {
        HostFile::prefetch(self, offset, len)
    }
}

/// Where the bytes of one guest run come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// Stored in this image at this file offset.
    Stored(u64),
    /// The image says these bytes are zero.
    Zero,
    /// Not allocated in this image; reads as zero.
    Unallocated,
    /// Not present in this layer: the parent disk supplies them.
    Parent,
}

/// A run of guest bytes with one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    /// First guest byte.
    pub start: u64,
    /// Length in bytes; never zero.
    pub len: u64,
    /// Where the bytes come from.
    pub source: Source,
}

/// Collects runs in guest order, merging neighbours (stored runs only when
/// their file offsets are contiguous too).
#[derive(Debug, Default)]
pub(crate) struct RunList {
    runs: Vec<Run>,
}

impl RunList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a run starting where the previous one ended; empty runs are dropped.
    pub fn push(&mut self, start: u64, len: u64, source: Source) {
        if len == 0 {
            return;
        }
        if let Some(last) = self.runs.last_mut() {
            let mergeable = match (last.source, source) {
                (Source::Stored(a), Source::Stored(b)) => a.checked_add(last.len) == Some(b),
                (a, b) => a == b,
            };
            if mergeable && last.start + last.len == start {
                last.len += len;
                return;
            }
        }
        self.runs.push(Run { start, len, source });
    }

    /// The runs, in guest order.
    pub fn runs(&self) -> &[Run] {
        &self.runs
    }
}

/// Passes a prefetch hint for `runs` on to the file (stored runs, contiguous
/// ones as one range) and the parent.
pub(crate) fn prefetch_runs(file: &dyn ReadAt, parent: Option<&dyn BlockSource>, runs: &[Run]) {
    let mut pending: Option<(u64, u64)> = None;
    for r in runs {
        match r.source {
            Source::Stored(at) => match &mut pending {
                Some((s, l)) if *s + *l == at => *l += r.len,
                _ => {
                    if let Some((s, l)) = pending.replace((at, r.len)) {
                        file.prefetch(s, l);
                    }
                }
            },
            Source::Parent => {
                if let Some(p) = parent {
                    p.prefetch(r.start, r.len.min(p.size().saturating_sub(r.start)));
                }
            }
            Source::Zero | Source::Unallocated => {}
        }
    }
    if let Some((s, l)) = pending {
        file.prefetch(s, l);
    }
}

/// Fills `buf` (guest bytes from `offset`) from `runs`, which must cover it.
pub(crate) fn read_runs(
    file: &dyn ReadAt,
    parent: Option<&dyn BlockSource>,
    runs: &[Run],
    offset: u64,
    buf: &mut [u8],
) -> Result<()> {
    for r in runs {
        let lo = (r.start - offset) as usize;
        let dst = &mut buf[lo..lo + r.len as usize];
        match r.source {
            Source::Stored(at) => file.read_exact_at(at, dst)?,
            Source::Zero | Source::Unallocated => dst.fill(0),
            Source::Parent => read_parent(parent, r.start, dst)?,
        }
    }
    Ok(())
}

/// Reads from the parent, zero-filling past its end (a parent may be smaller).
fn read_parent(parent: Option<&dyn BlockSource>, start: u64, dst: &mut [u8]) -> Result<()> {
    let Some(p) = parent else {
        dst.fill(0);
        return Ok(());
    };
    let avail = p.size().saturating_sub(start).min(dst.len() as u64) as usize;
    let (head, tail) = dst.split_at_mut(avail);
    if !head.is_empty() {
        p.read_at(start, head)?;
    }
    tail.fill(0);
    Ok(())
}

/// Turns runs into an allocation map, splicing in the parent's map one layer down.
pub(crate) fn map_runs(parent: Option<&dyn BlockSource>, runs: &[Run]) -> Result<Vec<Extent>> {
    let mut list = ExtentList::new();
    for r in runs {
        match r.source {
            Source::Stored(_) => list.push(r.start, r.len, ExtentKind::Data, 0),
            Source::Zero => list.push(r.start, r.len, ExtentKind::Zero, 0),
            Source::Unallocated => list.push(r.start, r.len, ExtentKind::Unallocated, 0),
            Source::Parent => {
                let Some(p) = parent else {
                    list.push(r.start, r.len, ExtentKind::Unallocated, 0);
                    continue;
                };
                let end = r.start + r.len;
                let pend = p.size().min(end);
                if pend > r.start {
                    let sub = p.map(r.start, pend - r.start)?;
                    list.extend_from_layer(&sub, 1);
                }
                if pend.max(r.start) < end {
                    let from = pend.max(r.start);
                    list.push(from, end - from, ExtentKind::Unallocated, 0);
                }
            }
        }
    }
    Ok(list.into_vec())
}

/// Decodes a UTF-16 string (little- or big-endian), stopping at the first NUL.
pub(crate) fn utf16_until_nul(bytes: &[u8], big_endian: bool) -> String {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| {
            if big_endian {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_le_bytes([c[0], c[1]])
            }
        })
        .take_while(|u| *u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_runs_merge_only_when_contiguous_in_file() {
        let mut l = RunList::new();
        l.push(0, 512, Source::Stored(1024));
        l.push(512, 512, Source::Stored(1536));
        l.push(1024, 512, Source::Stored(4096));
        l.push(1536, 512, Source::Zero);
        l.push(2048, 512, Source::Zero);
        assert_eq!(l.runs().len(), 3);
        assert_eq!(l.runs()[0].len, 1024);
        assert_eq!(l.runs()[2].len, 1024);
    }

    #[test]
    fn utf16_stops_at_nul() {
        let b = [b'a', 0, b'b', 0, 0, 0, b'c', 0];
        assert_eq!(utf16_until_nul(&b, false), "ab");
        let b = [0, b'x', 0, 0];
        assert_eq!(utf16_until_nul(&b, true), "x");
    }
}
