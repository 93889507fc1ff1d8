//! Dynamic VHD writer.
//!
//! Layout: a copy of the footer at offset 0, the 1024-byte dynamic header at
//! 512, the BAT at 1536 (big-endian sector numbers, `0xFFFFFFFF` for blocks
//! never written, padded with `0xFFFFFFFF` to a whole sector), then one entry
//! per non-zero 2 MiB block in guest order: its 512-byte sector bitmap (all
//! bits set) followed by the block's bytes, then the footer. A block the disk
//! ends inside is padded to its full size, as readers expect whole blocks.
//!
//! Blocks are streamed as chunks arrive; the BAT stays in memory and, with
//! both headers and the footers, is written by `finish`, so an interrupted
//! conversion leaves no VHD signature at offset 0. Within a written block,
//! zero 4 KiB runs are not written (the file is fresh, so they read as zero
//! and may stay holes).
//!
//! As for fixed disks, the size is rounded up to a whole MiB and stored
//! exactly in `current_size`, with a geometry that never contradicts it
//! (`write::footer_geometry`), so qemu 7.2 and 10 and Hyper-V agree on the
//! size. The timestamp is zero and the
//! unique ID is derived from the size and the data, so output is deterministic.

use crate::block::is_zero;
use crate::error::{Error, Result};
use crate::sink::{
    ChunkEncoder, ClusterData, EncodedChunk, ImageWriter, PlainEncoder, Preallocation, WriteOptions,
    WriteSummary,
};
use crate::vhd::header::{checksum, dyn_off, DiskType, DYN_COOKIE, DYN_HEADER_LEN, FOOTER_LEN};
use crate::vhd::write::{derived_id, footer, rounded_size, rounding_note};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// Bytes per block (the format's default, and what Hyper-V and qemu write).
pub const DYNAMIC_BLOCK_SIZE: u64 = 2 << 20;
const SECTOR: u64 = 512;
/// Sector bitmap in front of each block: one bit per sector, whole sectors.
const BITMAP_LEN: u64 = (DYNAMIC_BLOCK_SIZE / SECTOR / 8).next_multiple_of(SECTOR);
/// Where the dynamic header goes (right after the footer copy).
const HEADER_AT: u64 = FOOTER_LEN as u64;
/// Where the BAT goes (right after the dynamic header).
const BAT_AT: u64 = HEADER_AT + DYN_HEADER_LEN as u64;
/// BAT value of a block that holds no data.
const UNUSED: u32 = 0xffff_ffff;
/// Granularity at which zero runs inside a written block are skipped.
const GRANULE: usize = 4096;

/// Writes a dynamic VHD into a fresh file.
#[derive(Debug)]
pub struct VhdDynamicWriter {
    file: File,
    requested: u64,
    /// The rounded guest size.
    size: u64,
    /// Sector number of each block's bitmap, or [`UNUSED`].
    bat: Vec<u32>,
    /// File offset where the next block's bitmap goes.
    next_block_at: u64,
    /// Guest offset the next chunk may start at (chunks arrive in order).
    next_guest: u64,
    data_bytes: u64,
    /// Running CRC-32C of the data written, for a deterministic unique ID.
    digest: u32,
}

impl VhdDynamicWriter {
    /// Prepares `file` (empty) to hold a `size`-byte disk, rounded up to 1 MiB.
    pub fn create(file: File, size: u64, opts: &WriteOptions) -> Result<Self> {
        if opts.compression.is_some() {
            return Err(Error::invalid("VHD output cannot be compressed"));
        }
        if opts.preallocation == Preallocation::Full {
            return Err(Error::unsupported(
                "preallocated dynamic VHD output (use subformat=fixed)",
            ));
        }
        if let Some(cs) = opts.cluster_size.filter(|cs| *cs != DYNAMIC_BLOCK_SIZE) {
            return Err(Error::invalid(format!(
                "dynamic VHD output uses {DYNAMIC_BLOCK_SIZE}-byte blocks, not {cs}"
            )));
        }
        match opts.subformat.as_deref() {
            None | Some("dynamic") => {}
            Some(other) => {
                return Err(Error::unsupported(format!(
                    "VHD subformat '{other}' for the dynamic writer (use fixed or dynamic)"
                )))
            }
        }
        let rounded = rounded_size(size)?;
        let entries = rounded.div_ceil(DYNAMIC_BLOCK_SIZE);
        Ok(VhdDynamicWriter {
            file,
            requested: size,
            size: rounded,
            bat: vec![UNUSED; entries as usize],
            next_block_at: BAT_AT + bat_len(entries),
            next_guest: 0,
            data_bytes: 0,
            digest: 0,
        })
    }

    fn write(&self, at: u64, buf: &[u8], what: &str) -> Result<()> {
        self.file
            .write_all_at(buf, at)
            .map_err(|e| Error::io(format!("writing VHD {what} at {at:#x}"), e))
    }

    /// Stores guest block `block` (at most one block of bytes; a short one
    /// is the end of the disk and is padded).
    fn write_block(&mut self, block: u64, bytes: &[u8]) -> Result<()> {
        let at = self.next_block_at;
        let sector = u32::try_from(at / SECTOR)
            .ok()
            .filter(|s| *s != UNUSED)
            .ok_or_else(|| Error::invalid("dynamic VHD output grew past the format's 2 TiB of sectors"))?;
        self.write(at, &[0xff; BITMAP_LEN as usize], "sector bitmap")?;
        let data_at = at + BITMAP_LEN;
        for run in nonzero_runs(bytes) {
            self.write(data_at + run.start as u64, &bytes[run], "block")?;
        }
        self.bat[block as usize] = sector;
        self.next_block_at = data_at + DYNAMIC_BLOCK_SIZE;
        let guest = block * DYNAMIC_BLOCK_SIZE;
        self.digest = crc32c::crc32c_append(self.digest, &guest.to_le_bytes());
        self.digest = crc32c::crc32c_append(self.digest, bytes);
        self.data_bytes += bytes.len() as u64;
        Ok(())
    }

    /// The dynamic header for this disk.
    fn header(&self) -> [u8; DYN_HEADER_LEN] {
        let mut h = [0u8; DYN_HEADER_LEN];
        h[..8].copy_from_slice(DYN_COOKIE);
        h[8..16].copy_from_slice(&u64::MAX.to_be_bytes()); // data offset: unused
        h[dyn_off::TABLE_OFFSET..dyn_off::TABLE_OFFSET + 8].copy_from_slice(&BAT_AT.to_be_bytes());
        h[24..28].copy_from_slice(&0x0001_0000u32.to_be_bytes()); // header version
        let entries = self.bat.len() as u32;
        h[dyn_off::MAX_TABLE_ENTRIES..dyn_off::MAX_TABLE_ENTRIES + 4].copy_from_slice(&entries.to_be_bytes());
        h[dyn_off::BLOCK_SIZE..dyn_off::BLOCK_SIZE + 4]
            .copy_from_slice(&(DYNAMIC_BLOCK_SIZE as u32).to_be_bytes());
        let sum = checksum(&h, dyn_off::CHECKSUM);
        h[dyn_off::CHECKSUM..dyn_off::CHECKSUM + 4].copy_from_slice(&sum.to_be_bytes());
        h
    }
}

/// Bytes the BAT of `entries` blocks takes: whole sectors, at least one.
fn bat_len(entries: u64) -> u64 {
    (entries * 4).max(1).next_multiple_of(SECTOR)
}

/// Byte ranges of `bytes` made of consecutive [`GRANULE`]s that are not all zero.
fn nonzero_runs(bytes: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, g) in bytes.chunks(GRANULE).enumerate() {
        if is_zero(g) {
            continue;
        }
        let r = i * GRANULE..i * GRANULE + g.len();
        match runs.last_mut() {
            Some(last) if last.end == r.start => last.end = r.end,
            _ => runs.push(r),
        }
    }
    runs
}

impl ImageWriter for VhdDynamicWriter {
    fn cluster_size(&self) -> u64 {
        DYNAMIC_BLOCK_SIZE
    }

    fn encoder(&self) -> Arc<dyn ChunkEncoder> {
        Arc::new(PlainEncoder {
            cluster_size: DYNAMIC_BLOCK_SIZE,
        })
    }

    fn write_chunk(&mut self, chunk: &EncodedChunk) -> Result<()> {
        let len = chunk.data.len() as u64;
        let end = chunk
            .offset
            .checked_add(len)
            .ok_or_else(|| Error::invalid("chunk past the end of the VHD"))?;
        if chunk.offset % DYNAMIC_BLOCK_SIZE != 0 {
            return Err(Error::invalid("VHD chunk is not block aligned"));
        }
        if chunk.offset < self.next_guest {
            return Err(Error::invalid("VHD chunks out of order"));
        }
        if end > self.size {
            return Err(Error::invalid("chunk past the end of the VHD"));
        }
        // Only the chunk that ends the disk may end inside a block.
        if len % DYNAMIC_BLOCK_SIZE != 0 && end != self.requested && end != self.size {
            return Err(Error::invalid("VHD chunk does not end on a block boundary"));
        }
        if chunk.clusters.len() as u64 != len.div_ceil(DYNAMIC_BLOCK_SIZE) {
            return Err(Error::invalid("VHD chunk has the wrong number of clusters"));
        }
        for (i, c) in chunk.clusters.iter().enumerate() {
            let block = chunk.offset / DYNAMIC_BLOCK_SIZE + i as u64;
            match c {
                ClusterData::Zero => {}
                ClusterData::Plain => self.write_block(block, chunk.cluster_bytes(i, DYNAMIC_BLOCK_SIZE))?,
                ClusterData::Compressed(_) => return Err(Error::invalid("VHD blocks cannot be compressed")),
            }
        }
        self.next_guest = end.next_multiple_of(DYNAMIC_BLOCK_SIZE);
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<WriteSummary> {
        let entries = self.bat.len() as u64;
        let mut bat = vec![0xffu8; bat_len(entries) as usize];
        for (slot, e) in bat.chunks_exact_mut(4).zip(&self.bat) {
            slot.copy_from_slice(&e.to_be_bytes());
        }
        self.write(BAT_AT, &bat, "BAT")?;
        self.write(HEADER_AT, &self.header(), "dynamic header")?;
        let id = derived_id(self.size, self.digest);
        let foot = footer(self.size, DiskType::Dynamic, HEADER_AT, id);
        let file_size = self.next_block_at + FOOTER_LEN as u64;
        self.write(self.next_block_at, &foot, "footer")?;
        self.write(0, &foot, "footer copy")?;
        // The footer ends the file; nothing may follow it.
        self.file
            .set_len(file_size)
            .map_err(|e| Error::io("sizing VHD output", e))?;
        Ok(WriteSummary {
            virtual_size: self.size,
            data_bytes: self.data_bytes,
            file_size,
            notes: rounding_note(self.requested, self.size).into_iter().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_of_a_2_mib_block_is_one_sector() {
        assert_eq!(BITMAP_LEN, 512);
        assert_eq!(bat_len(0), 512);
        assert_eq!(bat_len(128), 512);
        assert_eq!(bat_len(129), 1024);
    }

    #[test]
    fn zero_granules_are_skipped_and_runs_merged() {
        let mut b = vec![0u8; 5 * GRANULE + 100];
        b[1] = 1;
        b[GRANULE + 5] = 1;
        b[4 * GRANULE] = 1;
        b[5 * GRANULE + 99] = 1;
        assert_eq!(nonzero_runs(&b), [0..2 * GRANULE, 4 * GRANULE..5 * GRANULE + 100]);
        assert!(nonzero_runs(&[0; 3 * GRANULE]).is_empty());
    }
}
