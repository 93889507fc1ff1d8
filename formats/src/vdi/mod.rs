//! VirtualBox VDI reader: dynamic and static images, format version 1.1.
//!
//! Block map value 0xFFFFFFFF is a block never written (unallocated),
//! 0xFFFFFFFE a block discarded to zero; both read as zero. Undo and
//! differencing images are refused: they name their parent only by UUID.

mod header;
mod map;

pub use header::{off, MAX_BLOCK_EXTRA, MAX_BLOCK_SIZE, MAX_DISK_SIZE};
pub use map::MAX_BLOCKS;

use crate::block::{check_range, BlockSource, Extent, ImageInfo};
use crate::error::Result;
use crate::file::HostFile;
use crate::vhd::runs::{map_runs, prefetch_runs, read_runs};
use header::{Header, ImageType, HEADER_LEN};
use map::BlockMap;

/// An open VDI image.
#[derive(Debug)]
pub struct VdiImage {
    file: HostFile,
    header: Header,
    map: BlockMap,
}

impl VdiImage {
    /// Parses the header and block map of `file`.
    pub fn open(file: HostFile) -> Result<Self> {
        let head = file.read_vec(0, HEADER_LEN.min(file.len() as usize))?;
        let header = header::parse(&head)?;
        let map = BlockMap::load(&file, &header)?;
        Ok(VdiImage { file, header, map })
    }
}

impl BlockSource for VdiImage {
    fn size(&self) -> u64 {
        self.header.disk_size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(self.size(), offset, buf.len() as u64)?;
        let runs = self.map.runs(offset, buf.len() as u64);
        read_runs(&self.file, None, runs.runs(), offset, buf)
    }

    fn map(&self, start: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(self.size(), start, len)?;
        map_runs(None, self.map.runs(start, len).runs())
    }

    fn prefetch(&self, offset: u64, len: u64) {
        if check_range(self.size(), offset, len).is_ok() {
            prefetch_runs(&self.file, None, self.map.runs(offset, len).runs());
        }
    }

    fn info(&self) -> ImageInfo {
        ImageInfo {
            path: self.file.path().display().to_string(),
            format: "vdi".into(),
            subformat: Some(
                match self.header.image_type {
                    ImageType::Dynamic => "dynamic",
                    ImageType::Static => "static",
                }
                .into(),
            ),
            virtual_size: self.header.disk_size,
            file_size: Some(self.file.len()),
            cluster_size: Some(self.header.block_size),
            details: vec![("allocated blocks".into(), self.map.allocated().to_string())],
            ..ImageInfo::default()
        }
    }
}
