//! The `xfs` fuzz target: bytes taken as the start of a zero-extended
//! volume, opened as XFS and walked with a budget.

use super::Xfs;
use crate::fs::Filesystem;
use std::sync::Arc;
use v2x_formats::block::{check_range, BlockSource, Extent, ExtentKind, ImageInfo};
use v2x_formats::Result;

/// Size of the volume a fuzz input is the prefix of (the seeds' filesystems are 16 MiB).
const VOLUME: u64 = 16 << 20;
/// `data` followed by zeros up to [`VOLUME`] bytes.
pub(super) struct ZeroExtended(pub(super) Vec<u8>);

impl BlockSource for ZeroExtended {
    fn size(&self) -> u64 {
        VOLUME.max(self.0.len() as u64)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(self.size(), offset, buf.len() as u64)?;
        buf.fill(0);
        let start = offset.min(self.0.len() as u64) as usize;
        let end = (offset + buf.len() as u64).min(self.0.len() as u64) as usize;
        buf[..end - start].copy_from_slice(&self.0[start..end]);
        Ok(())
    }
    fn map(&self, start: u64, len: u64) -> Result<Vec<Extent>> {
        Ok(vec![Extent {
            start,
            len,
            kind: ExtentKind::Data,
            layer: 0,
        }])
    }
    fn info(&self) -> ImageInfo {
        ImageInfo::default()
    }
}

/// Opens `data` as XFS and reads every file, directory and link reachable
/// within the budget. Errors are expected; panics and hangs are bugs.
pub fn walk(data: &[u8]) {
    let Ok(fs) = Xfs::open(Arc::new(ZeroExtended(data.to_vec()))) else {
        return;
    };
    let _ = (fs.label(), fs.uuid());
    crate::fuzzing::walk(&fs, 1 << 20);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed seeds are real filesystems, so the fuzzer starts deep.
    #[test]
    fn seeds_open_and_read() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/xfs");
        for name in ["small-v4", "small-v5"] {
            let data = std::fs::read(dir.join(name)).unwrap();
            let fs = Xfs::open(Arc::new(ZeroExtended(data))).unwrap();
            assert_eq!(fs.read_file("/etc/hostname", 100).unwrap(), b"hello\n");
            assert_eq!(fs.read_link("/etc/link").unwrap(), "../etc/hostname");
            assert_eq!(fs.read_dir("/d").unwrap().len(), 3);
        }
    }
}
