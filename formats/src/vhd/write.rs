//! Fixed VHD writer: the disk bytes, then a 512-byte footer. Also the
//! pieces the dynamic writer shares: size rounding, CHS geometry, the footer
//! and the deterministic unique ID.
//!
//! The size is rounded up to a whole MiB, which Azure requires of uploaded
//! fixed VHDs, and `current_size` carries it exactly (the CHS geometry never
//! contradicts it: see [`footer_geometry`]). Zero
//! clusters stay holes. The output is deterministic: the timestamp is zero
//! and the unique ID is derived from the size and the data written.

use crate::error::{Error, Result};
use crate::sink::{
    ChunkEncoder, EncodedChunk, ImageWriter, PlainEncoder, Preallocation, WriteOptions, WriteSummary,
};
use crate::vhd::header::{checksum, footer_off, DiskType, FOOTER_COOKIE, FOOTER_LEN};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// Granularity of hole detection.
const GRANULE: u64 = 4096;
/// VHDs we write are rounded up to this (Azure's rule).
const ALIGN: u64 = 1 << 20;
/// The largest disk a VHD can describe (2040 GiB).
pub const MAX_WRITE_SIZE: u64 = 2040 << 30;

/// Writes a fixed VHD into a fresh file.
#[derive(Debug)]
pub struct VhdFixedWriter {
    file: File,
    requested: u64,
    size: u64,
    data_bytes: u64,
    /// Running CRC-32C of the data written, for a deterministic unique ID.
    digest: u32,
}

impl VhdFixedWriter {
    /// Prepares `file` (empty) to hold a `size`-byte disk, rounded up to 1 MiB.
    pub fn create(file: File, size: u64, opts: &WriteOptions) -> Result<Self> {
        if opts.compression.is_some() {
            return Err(Error::invalid("VHD output cannot be compressed"));
        }
        if opts.cluster_size.is_some() {
            return Err(Error::invalid("fixed VHD output has no cluster size"));
        }
        match opts.subformat.as_deref() {
            None | Some("fixed") => {}
            Some(other) => {
                return Err(Error::unsupported(format!(
                    "VHD subformat '{other}' for the fixed writer (use fixed or dynamic)"
                )))
            }
        }
        let rounded = rounded_size(size)?;
        file.set_len(rounded + FOOTER_LEN as u64)
            .map_err(|e| Error::io("sizing VHD output", e))?;
        if opts.preallocation == Preallocation::Full && rounded > 0 {
            rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, rounded)
                .map_err(|e| Error::io("preallocating VHD output", e.into()))?;
        }
        Ok(VhdFixedWriter {
            file,
            requested: size,
            size: rounded,
            data_bytes: 0,
            digest: 0,
        })
    }
}

/// `size` rounded up to a whole MiB, refused past [`MAX_WRITE_SIZE`].
pub(crate) fn rounded_size(size: u64) -> Result<u64> {
    size.checked_next_multiple_of(ALIGN)
        .filter(|s| *s <= MAX_WRITE_SIZE)
        .ok_or_else(|| {
            Error::invalid(format!(
                "a VHD holds at most {MAX_WRITE_SIZE} bytes; the disk has {size}"
            ))
        })
}

/// The note reported when [`rounded_size`] changed the size.
pub(crate) fn rounding_note(requested: u64, size: u64) -> Option<String> {
    (size != requested)
        .then(|| format!("size rounded up from {requested} to {size} bytes (VHDs are written in whole MiB)"))
}

/// Cylinders, heads and sectors per track for `size` bytes (VHD spec appendix).
pub fn chs(size: u64) -> (u16, u8, u8) {
    let total = (size / 512).min(65535 * 16 * 255);
    let (spt, heads, cth) = if total >= 65535 * 16 * 63 {
        (255, 16, total / 255)
    } else {
        let mut spt = 17;
        let mut cth = total / spt;
        let mut heads = cth.div_ceil(1024).max(4);
        if cth >= heads * 1024 || heads > 16 {
            spt = 31;
            heads = 16;
            cth = total / spt;
        }
        if cth >= heads * 1024 {
            spt = 63;
            heads = 16;
            cth = total / spt;
        }
        (spt, heads, cth)
    };
    ((cth / heads) as u16, heads as u8, spt as u8)
}

/// The geometry written in the footer. Readers disagree on whether CHS or
/// `current_size` is the disk size (qemu 7.2 believes CHS for unknown
/// creators, qemu 10 believes `current_size`), so the geometry must not
/// contradict `current_size`: it is the specification's geometry when that
/// describes `size` exactly, and otherwise the maximum geometry, which every
/// reader takes to mean "use current_size" (Disk2vhd does the same).
pub fn footer_geometry(size: u64) -> (u16, u8, u8) {
    let (c, h, s) = chs(size);
    if u64::from(c) * u64::from(h) * u64::from(s) * 512 == size {
        (c, h, s)
    } else {
        (65535, 16, 255)
    }
}

/// Builds the footer of a fixed disk of `size` bytes with `unique_id`.
pub fn fixed_footer(size: u64, unique_id: [u8; 16]) -> [u8; FOOTER_LEN] {
    footer(size, DiskType::Fixed, u64::MAX, unique_id)
}

/// Builds the footer of a `kind` disk of `size` bytes whose dynamic header
/// is at `data_offset` (all ones for a fixed disk). The timestamp is zero,
/// so the footer depends only on its arguments.
pub(crate) fn footer(size: u64, kind: DiskType, data_offset: u64, unique_id: [u8; 16]) -> [u8; FOOTER_LEN] {
    let disk_type: u32 = match kind {
        DiskType::Fixed => 2,
        DiskType::Dynamic => 3,
        DiskType::Differencing => 4,
    };
    let mut f = [0u8; FOOTER_LEN];
    f[..8].copy_from_slice(FOOTER_COOKIE);
    f[8..12].copy_from_slice(&2u32.to_be_bytes()); // features: reserved bit
    f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    f[footer_off::DATA_OFFSET..footer_off::DATA_OFFSET + 8].copy_from_slice(&data_offset.to_be_bytes());
    f[footer_off::CREATOR_APP..footer_off::CREATOR_APP + 4].copy_from_slice(b"v2x ");
    f[32..36].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    f[36..40].copy_from_slice(b"Wi2k");
    f[40..48].copy_from_slice(&size.to_be_bytes());
    f[footer_off::CURRENT_SIZE..footer_off::CURRENT_SIZE + 8].copy_from_slice(&size.to_be_bytes());
    let (c, h, s) = footer_geometry(size);
    f[56..58].copy_from_slice(&c.to_be_bytes());
    f[58] = h;
    f[59] = s;
    f[footer_off::DISK_TYPE..footer_off::DISK_TYPE + 4].copy_from_slice(&disk_type.to_be_bytes());
    f[footer_off::UNIQUE_ID..footer_off::UNIQUE_ID + 16].copy_from_slice(&unique_id);
    let sum = checksum(&f, footer_off::CHECKSUM);
    f[footer_off::CHECKSUM..footer_off::CHECKSUM + 4].copy_from_slice(&sum.to_be_bytes());
    f
}

/// A version-4-shaped ID derived from `size` and a data digest.
pub(crate) fn derived_id(size: u64, digest: u32) -> [u8; 16] {
    let a = crc32c::crc32c_append(digest, &size.to_le_bytes());
    let b = crc32c::crc32c_append(a, b"v2x-vhd-id");
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&size.to_be_bytes());
    id[8..12].copy_from_slice(&a.to_be_bytes());
    id[12..].copy_from_slice(&b.to_be_bytes());
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    id
}

impl ImageWriter for VhdFixedWriter {
    fn cluster_size(&self) -> u64 {
        GRANULE
    }

    fn encoder(&self) -> Arc<dyn ChunkEncoder> {
        Arc::new(PlainEncoder {
            cluster_size: GRANULE,
        })
    }

    fn write_chunk(&mut self, chunk: &EncodedChunk) -> Result<()> {
        for run in chunk.plain_runs(GRANULE) {
            let bytes = &chunk.data[run.clone()];
            let at = chunk.offset + run.start as u64;
            if at + bytes.len() as u64 > self.size {
                return Err(Error::invalid("chunk past the end of the VHD"));
            }
            self.file
                .write_all_at(bytes, at)
                .map_err(|e| Error::io(format!("writing VHD output at {at:#x}"), e))?;
            self.digest = crc32c::crc32c_append(self.digest, &at.to_le_bytes());
            self.digest = crc32c::crc32c_append(self.digest, bytes);
            self.data_bytes += bytes.len() as u64;
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<WriteSummary> {
        let footer = fixed_footer(self.size, derived_id(self.size, self.digest));
        self.file
            .write_all_at(&footer, self.size)
            .map_err(|e| Error::io("writing the VHD footer", e))?;
        Ok(WriteSummary {
            virtual_size: self.size,
            data_bytes: self.data_bytes,
            file_size: self.size + FOOTER_LEN as u64,
            notes: rounding_note(self.requested, self.size).into_iter().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chs_matches_the_specification_examples() {
        // The specification rounds down; qemu rounds up (964/5/17, 65279/16/255).
        assert_eq!(chs(40 << 20), (963, 5, 17));
        assert_eq!(chs(127 << 30), (65278, 16, 255));
        assert_eq!(chs(u64::MAX), (65535, 16, 255));
        // 40 MiB is not a whole number of 963x5x17 tracks: the footer says "use current_size".
        assert_eq!(footer_geometry(40 << 20), (65535, 16, 255));
        // 17 sectors x 4 heads x 1000 cylinders is exact.
        assert_eq!(footer_geometry(1000 * 4 * 17 * 512), (1000, 4, 17));
    }
}
