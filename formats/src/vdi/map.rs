//! The VDI block map: one u32 per block, naming its index in the data area.

use crate::error::{check_limit, Error, Result};
use crate::vdi::header::Header;
use crate::vhd::runs::{ReadAt, RunList, Source};

/// Most block map entries we load (64 MiB of map; 16 TiB at 1 MiB blocks).
pub const MAX_BLOCKS: u64 = 1 << 24;

/// Block map value of a block never written.
const FREE: u32 = 0xffff_ffff;
/// Block map value of a block discarded to zero.
const ZERO: u32 = 0xffff_fffe;

/// The block map with the geometry to turn it into file offsets.
#[derive(Debug)]
pub struct BlockMap {
    entries: Vec<u32>,
    block_size: u64,
    /// Bytes from one data block to the next (block size plus extra data).
    stride: u64,
    /// File offset of block 0's data (past its extra data).
    data_at: u64,
}

impl BlockMap {
    /// Reads the block map described by `h`.
    pub fn load(file: &dyn ReadAt, h: &Header) -> Result<BlockMap> {
        check_limit("VDI blocks", h.blocks, MAX_BLOCKS)?;
        let raw = file.read_table(h.blocks_offset, h.blocks * 4, "VDI block map")?;
        let entries: Vec<u32> = raw
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        for (i, e) in entries.iter().enumerate() {
            if *e < ZERO && u64::from(*e) >= h.blocks {
                return Err(Error::corrupt(
                    format!(
                        "VDI block {i} maps to data block {e}, beyond the {} blocks",
                        h.blocks
                    ),
                    h.blocks_offset + i as u64 * 4,
                ));
            }
        }
        Ok(BlockMap {
            entries,
            block_size: h.block_size,
            stride: h.block_size + h.block_extra,
            data_at: h.data_offset + h.block_extra,
        })
    }

    /// Number of blocks stored in the file.
    pub fn allocated(&self) -> usize {
        self.entries.iter().filter(|e| **e < ZERO).count()
    }

    /// Translates guest `[start, start + len)` into runs.
    pub fn runs(&self, start: u64, len: u64) -> RunList {
        let mut list = RunList::new();
        let end = start + len;
        let mut pos = start;
        while pos < end {
            let block = pos / self.block_size;
            let base = block * self.block_size;
            let seg_end = end.min(base + self.block_size);
            let source = match self.entries.get(block as usize).copied().unwrap_or(FREE) {
                FREE => Source::Unallocated,
                ZERO => Source::Zero,
                // index < blocks <= MAX_BLOCKS and stride <= 65 MiB: no overflow.
                i => Source::Stored(self.data_at + u64::from(i) * self.stride + (pos - base)),
            };
            list.push(pos, seg_end - pos, source);
            pos = seg_end;
        }
        list
    }
}
