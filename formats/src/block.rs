//! The block layer: what every image reader offers to the rest of v2x.
//!
//! A reader is a [`BlockSource`]: positional reads through `&self`, so many
//! threads can read one open image at once, plus an allocation map so a copy
//! can skip holes without reading them.

use crate::error::{Error, Result};
use serde::Serialize;

/// How a run of guest bytes is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExtentKind {
    /// Bytes are stored in some layer of the image (they may still happen to be zero).
    Data,
    /// The image says explicitly that these bytes read as zero.
    Zero,
    /// No layer stores these bytes; they read as zero.
    Unallocated,
}

impl ExtentKind {
    /// True when the bytes are known to read as zero without reading them.
    pub fn reads_as_zero(self) -> bool {
        !matches!(self, ExtentKind::Data)
    }
}

/// One run of the allocation map, in guest (virtual) byte offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Extent {
    /// First guest byte.
    pub start: u64,
    /// Length in bytes; never zero.
    pub len: u64,
    /// How the bytes are stored.
    pub kind: ExtentKind,
    /// Which layer of a chain answered: 0 is the image itself, 1 its backing file, ...
    pub layer: u32,
}

impl Extent {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.start + self.len
    }
}

/// A disk image opened for reading.
///
/// Implementations must be safe to share between threads: `read_at` takes
/// `&self` and must not depend on a file cursor.
pub trait BlockSource: Send + Sync {
    /// Guest-visible size in bytes.
    fn size(&self) -> u64;

    /// Fills `buf` with the guest bytes at `offset`. The whole range must lie
    /// inside `size()`; holes are written as zeros (the buffer's previous
    /// content never leaks through).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;

    /// Returns the allocation map of `[start, start + len)`: sorted,
    /// contiguous extents covering exactly that range. Adjacent extents of the
    /// same kind and layer should be merged.
    fn map(&self, start: u64, len: u64) -> Result<Vec<Extent>>;

    /// Describes the image for `v2x info`.
    fn info(&self) -> ImageInfo;

    /// A hint that guest bytes `[offset, offset + len)` will be read soon:
    /// sources backed by files ask the kernel to start reading them
    /// (`POSIX_FADV_WILLNEED`), so a copy keeps many reads in flight on
    /// cold storage while its workers handle the bytes already read. Never
    /// fails and never waits for the data; the default does nothing.
    fn prefetch(&self, offset: u64, len: u64) {
        let _ = (offset, len);
    }

    /// Writes guest bytes at `offset`. Image readers never write (sources
    /// are opened read-only) and refuse; only a copy-on-write layer over a
    /// source (v2x's overlay) and views of one (partitions, logical
    /// volumes) accept writes, which land in that layer.
    fn write_through(&self, offset: u64, data: &[u8]) -> Result<()> {
        let _ = (offset, data);
        Err(Error::unsupported(format!(
            "{} is read-only (writes go through a copy-on-write overlay)",
            self.info().path
        )))
    }
}

/// What `v2x info` shows about one image (and, through `backing`, its chain).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImageInfo {
    /// Path of the image file, as opened.
    pub path: String,
    /// Format name as qemu-img spells it where one exists ("raw", "qcow2", "vmdk", "vpc", ...).
    pub format: String,
    /// Subformat or version ("compat 1.1", "monolithicSparse", "dynamic", ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subformat: Option<String>,
    /// Guest-visible size in bytes.
    pub virtual_size: u64,
    /// Size of the image file on the host, in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_size: Option<u64>,
    /// Allocation unit, where the format has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_size: Option<u64>,
    /// Format-specific facts, in display order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<(String, String)>,
    /// Things the user should know (ignored snapshots, repaired tables, ...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The next image down the chain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backing: Option<Box<ImageInfo>>,
}

/// Checks that `[offset, offset + len)` lies inside a source of `size` bytes.
pub fn check_range(size: u64, offset: u64, len: u64) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::invalid(format!(
            "range {offset:#x}+{len:#x} lies outside the {size}-byte disk"
        ))),
    }
}

/// Builds an allocation map, merging adjacent runs of the same kind and layer.
#[derive(Debug, Default)]
pub struct ExtentList {
    extents: Vec<Extent>,
}

impl ExtentList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a run; it must start where the previous one ended. Empty runs are ignored.
    pub fn push(&mut self, start: u64, len: u64, kind: ExtentKind, layer: u32) {
        if len == 0 {
            return;
        }
        if let Some(last) = self.extents.last_mut() {
            debug_assert_eq!(last.end(), start, "extents must be contiguous");
            if last.kind == kind && last.layer == layer && last.end() == start {
                last.len += len;
                return;
            }
        }
        self.extents.push(Extent {
            start,
            len,
            kind,
            layer,
        });
    }

    /// Appends extents from a lower layer's map, shifting their layer by `depth`.
    pub fn extend_from_layer(&mut self, extents: &[Extent], depth: u32) {
        for e in extents {
            let layer = if e.kind == ExtentKind::Unallocated {
                e.layer
            } else {
                e.layer + depth
            };
            self.push(e.start, e.len, e.kind, layer);
        }
    }

    /// The finished map.
    pub fn into_vec(self) -> Vec<Extent> {
        self.extents
    }
}

/// True when every byte of `buf` is zero. Tuned for large buffers.
pub fn is_zero(buf: &[u8]) -> bool {
    let mut chunks = buf.chunks_exact(64);
    for c in &mut chunks {
        let mut acc = 0u8;
        for b in c {
            acc |= *b;
        }
        if acc != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(|b| *b == 0)
}

impl<T: BlockSource + ?Sized> BlockSource for Box<T> {
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        (**self).read_at(offset, buf)
    }
    fn map(&self, start: u64, len: u64) -> Result<Vec<Extent>> {
        (**self).map(start, len)
    }
    fn info(&self) -> ImageInfo {
        (**self).info()
    }
    fn write_through(&self, offset: u64, data: &[u8]) -> Result<()> {
        (**self).write_through(offset, data)
    }
    fn prefetch(&self, offset: u64, len: u64) {
        (**self).prefetch(offset, len)
    }
}

impl<T: BlockSource + ?Sized> BlockSource for std::sync::Arc<T> {
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        (**self).read_at(offset, buf)
    }
    fn map(&self, start: u64, len: u64) -> Result<Vec<Extent>> {
        (**self).map(start, len)
    }
    fn info(&self) -> ImageInfo {
        (**self).info()
    }
    fn write_through(&self, offset: u64, data: &[u8]) -> Result<()> {
        (**self).write_through(offset, data)
    }
    fn prefetch(&self, offset: u64, len: u64) {
        (**self).prefetch(offset, len)
    }
}

/// A byte range of another source, seen as a disk of its own: a partition,
/// a logical volume segment, or a member of an OVA tar.
pub struct SubRange {
    inner: std::sync::Arc<dyn BlockSource>,
    offset: u64,
    len: u64,
    name: String,
}

impl SubRange {
    /// `[offset, offset + len)` of `inner`, which must lie inside it.
    pub fn new(
        inner: std::sync::Arc<dyn BlockSource>,
        offset: u64,
        len: u64,
        name: impl Into<String>,
    ) -> Result<Self> {
        check_range(inner.size(), offset, len)?;
        Ok(Self {
            inner,
            offset,
            len,
            name: name.into(),
        })
    }

    /// Where the range starts in the underlying source.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

impl BlockSource for SubRange {
    fn size(&self) -> u64 {
        self.len
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(self.len, offset, buf.len() as u64)?;
        self.inner.read_at(self.offset + offset, buf)
    }
    fn map(&self, start: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(self.len, start, len)?;
        let mut out = self.inner.map(self.offset + start, len)?;
        for e in &mut out {
            e.start -= self.offset;
        }
        Ok(out)
    }
    fn info(&self) -> ImageInfo {
        let mut info = self.inner.info();
        info.path = self.name.clone();
        info.virtual_size = self.len;
        info
    }
    fn write_through(&self, offset: u64, data: &[u8]) -> Result<()> {
        check_range(self.len, offset, data.len() as u64)?;
        self.inner.write_through(self.offset + offset, data)
    }
    fn prefetch(&self, offset: u64, len: u64) {
        let len = len.min(self.len.saturating_sub(offset));
        if len > 0 {
            self.inner.prefetch(self.offset + offset, len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extent_list_merges_neighbours() {
        let mut l = ExtentList::new();
        l.push(0, 10, ExtentKind::Data, 0);
        l.push(10, 5, ExtentKind::Data, 0);
        l.push(15, 5, ExtentKind::Data, 1);
        l.push(20, 0, ExtentKind::Zero, 0);
        l.push(20, 4, ExtentKind::Zero, 0);
        let v = l.into_vec();
        assert_eq!(v.len(), 3);
        assert_eq!((v[0].start, v[0].len), (0, 15));
        assert_eq!(v[1].layer, 1);
        assert_eq!(v[2].kind, ExtentKind::Zero);
    }

    #[test]
    fn is_zero_finds_any_set_byte() {
        let mut buf = vec![0u8; 4099];
        assert!(is_zero(&buf));
        for i in [0, 63, 64, 4095, 4098] {
            buf[i] = 1;
            assert!(!is_zero(&buf), "byte {i}");
            buf[i] = 0;
        }
    }

    #[test]
    fn check_range_rejects_overflow() {
        assert!(check_range(100, 90, 10).is_ok());
        assert!(check_range(100, 91, 10).is_err());
        assert!(check_range(100, u64::MAX, 2).is_err());
    }
}
