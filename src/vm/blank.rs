//! A new, empty disk: what an OVF Disk without a file becomes.

use v2x_formats::block::{check_range, BlockSource, Extent, ExtentKind, ImageInfo};
use v2x_formats::Result;

/// A disk of `size` bytes that stores nothing and reads as zeros.
#[derive(Debug, Clone)]
pub struct BlankDisk {
    size: u64,
    name: String,
}

impl BlankDisk {
    /// A blank disk of `size` bytes, named `name` in reports.
    pub fn new(name: &str, size: u64) -> Self {
        BlankDisk {
            size,
            name: name.to_string(),
        }
    }
}

impl BlockSource for BlankDisk {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(self.size, offset, buf.len() as u64)?;
        buf.fill(0);
        Ok(())
    }

    fn map(&self, start: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(self.size, start, len)?;
        if len == 0 {
            return Ok(Vec::new());
        }
        Ok(vec![Extent {
            start,
            len,
            kind: ExtentKind::Unallocated,
            layer: 0,
        }])
    }

    fn info(&self) -> ImageInfo {
        ImageInfo {
            path: self.name.clone(),
            format: "blank".into(),
            virtual_size: self.size,
            ..ImageInfo::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_zero_and_maps_unallocated() {
        let d = BlankDisk::new("x", 1 << 20);
        let mut buf = [7u8; 512];
        d.read_at(4096, &mut buf).unwrap();
        assert!(buf.iter().all(|b| *b == 0));
        let m = d.map(0, 1 << 20).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].kind, ExtentKind::Unallocated);
        assert!(d.read_at((1 << 20) - 100, &mut buf).is_err());
    }
}
