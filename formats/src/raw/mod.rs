//! Raw images: a file or block device whose bytes are the disk.

mod write;

pub use write::RawWriter;

use crate::block::{check_range, BlockSource, Extent, ExtentKind, ExtentList, ImageInfo};
use crate::error::{Error, Result};
use crate::file::HostFile;
use rustix::fs::SeekFrom;
use rustix::io::Errno;

/// A raw image, or a byte range of a host file read as one (an OVA member).
#[derive(Debug)]
pub struct RawImage {
    file: HostFile,
    base: u64,
    size: u64,
}

impl RawImage {
    /// The whole file as a disk.
    pub fn new(file: HostFile) -> Result<Self> {
        let size = file.len();
        Ok(RawImage { file, base: 0, size })
    }

    /// `size` bytes of `file` starting at `base`, read as a disk.
    pub fn slice(file: HostFile, base: u64, size: u64) -> Result<Self> {
        match base.checked_add(size) {
            Some(end) if end <= file.len() => Ok(RawImage { file, base, size }),
            _ => Err(Error::corrupt(
                format!(
                    "slice {base:#x}+{size:#x} lies past the end of {}",
                    file.path().display()
                ),
                base,
            )),
        }
    }

    /// Next data or hole boundary at or after `pos` (a file offset), or None when
    /// the filesystem cannot say.
    fn seek(&self, pos: u64, data: bool) -> Option<std::result::Result<u64, Errno>> {
        let whence = if data {
            SeekFrom::Data(pos)
        } else {
            SeekFrom::Hole(pos)
        };
        match rustix::fs::seek(self.file.file()?, whence) {
            Ok(p) => Some(Ok(p)),
            // ENXIO: no more data after pos.
            Err(Errno::NXIO) => Some(Err(Errno::NXIO)),
            Err(_) => None,
        }
    }
}

impl BlockSource for RawImage {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(self.size, offset, buf.len() as u64)?;
        self.file.read_exact_at(self.base + offset, buf)
    }

    fn prefetch(&self, offset: u64, len: u64) {
        let len = len.min(self.size.saturating_sub(offset));
        if let Some(at) = self.base.checked_add(offset) {
            self.file.prefetch(at, len);
        }
    }

    fn map(&self, start: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(self.size, start, len)?;
        let end = start + len;
        let mut list = ExtentList::new();
        let mut pos = start;
        while pos < end {
            let fpos = self.base + pos;
            let data_at = match self.seek(fpos, true) {
                None => {
                    // No SEEK_DATA (block device, old filesystem): all data.
                    list.push(pos, end - pos, ExtentKind::Data, 0);
                    break;
                }
                Some(Err(_)) => end,
                Some(Ok(d)) => (d - self.base).clamp(pos, end),
            };
            list.push(pos, data_at - pos, ExtentKind::Unallocated, 0);
            if data_at >= end {
                break;
            }
            let hole_at = match self.seek(self.base + data_at, false) {
                Some(Ok(h)) => (h - self.base).clamp(data_at, end),
                _ => end,
            };
            // A hole must make progress; a filesystem that says otherwise gets "data".
            let hole_at = if hole_at == data_at { end } else { hole_at };
            list.push(data_at, hole_at - data_at, ExtentKind::Data, 0);
            pos = hole_at;
        }
        Ok(list.into_vec())
    }

    fn info(&self) -> ImageInfo {
        ImageInfo {
            path: self.file.path().display().to_string(),
            format: "raw".into(),
            virtual_size: self.size,
            file_size: Some(self.file.len()),
            details: if self.base != 0 {
                vec![("offset".into(), self.base.to_string())]
            } else {
                Vec::new()
            },
            ..ImageInfo::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn sparse_file_maps_holes() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(8 << 20).unwrap();
        use std::os::unix::fs::FileExt;
        f.as_file().write_all_at(&[7u8; 65536], 2 << 20).unwrap();
        f.flush().unwrap();
        let img = RawImage::new(HostFile::open(f.path()).unwrap()).unwrap();
        let map = img.map(0, 8 << 20).unwrap();
        let data: u64 = map
            .iter()
            .filter(|e| e.kind == ExtentKind::Data)
            .map(|e| e.len)
            .sum();
        assert!((65536..(8 << 20)).contains(&data), "map {map:?}");
        assert_eq!(map.first().unwrap().start, 0);
        assert_eq!(map.last().unwrap().end(), 8 << 20);
        let mut buf = [0u8; 4];
        img.read_at(2 << 20, &mut buf).unwrap();
        assert_eq!(buf, [7; 4]);
        assert!(img.read_at((8 << 20) - 2, &mut buf).is_err());
    }
}
