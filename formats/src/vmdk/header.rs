//! On-disk structures of VMDK extents: the hosted sparse header ("KDMV"),
//! the ESXi vmfsSparse header ("COWD") and streamOptimized markers.
//!
//! Offsets follow VMware's "Virtual Disk Format 1.1"; all fields are
//! little-endian.

use crate::error::{check_limit, Error, Result};

/// Bytes per VMDK sector; every offset in the headers counts these.
pub const SECTOR: u64 = 512;

/// `gdOffset` value meaning "the grain directory is described by the footer".
pub const GD_AT_END: u64 = u64::MAX;

/// Largest grain we accept (16 MiB); VMware uses 64 KiB, qemu refuses above 1 GiB.
pub const MAX_GRAIN_SIZE: u64 = 16 << 20;
/// Most grain-table entries per grain table (VMware: 512 hosted, 4096 COWD).
pub const MAX_GTES_PER_GT: u64 = 1 << 16;
/// Largest virtual size of one extent (64 TiB, above ESXi's 62 TiB).
pub const MAX_EXTENT_CAPACITY: u64 = 64 << 40;
/// Most grain-directory entries (64 MiB of directory).
pub const MAX_GD_ENTRIES: u64 = 16 << 20;
/// Largest embedded or stand-alone descriptor we parse.
pub const MAX_DESCRIPTOR_SIZE: u64 = 1 << 20;

/// Header flag: the newline-corruption test characters are valid.
pub const FLAG_NL_TEST: u32 = 1 << 0;
/// Header flag: a redundant grain directory exists at `rgdOffset`.
pub const FLAG_REDUNDANT_GD: u32 = 1 << 1;
/// Header flag: a grain-table entry of 1 means "grain reads as zero".
pub const FLAG_ZERO_GRAIN: u32 = 1 << 2;
/// Header flag: grains are compressed.
pub const FLAG_COMPRESSED: u32 = 1 << 16;
/// Header flag: grains and metadata are preceded by markers.
pub const FLAG_MARKERS: u32 = 1 << 17;

/// `compressAlgorithm` value for deflate.
pub const COMPRESS_DEFLATE: u16 = 1;

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}
fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

/// The 512-byte header of a hosted sparse extent (also the streamOptimized footer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparseHeader {
    /// Header version: 1, 2 or 3.
    pub version: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Virtual size of the extent, in sectors.
    pub capacity: u64,
    /// Sectors per grain.
    pub grain_sectors: u64,
    /// Sector of the embedded descriptor (0: none).
    pub descriptor_offset: u64,
    /// Length of the embedded descriptor, in sectors.
    pub descriptor_size: u64,
    /// Entries per grain table.
    pub gtes_per_gt: u32,
    /// Sector of the redundant grain directory.
    pub rgd_offset: u64,
    /// Sector of the grain directory, or [`GD_AT_END`].
    pub gd_offset: u64,
    /// Sectors of metadata before the first grain.
    pub overhead: u64,
    /// Compression algorithm (0 none, 1 deflate).
    pub compress_algorithm: u16,
}

/// Byte offsets of the sparse header's fields, for mutation tests.
pub mod field {
    /// `version` (u32).
    pub const VERSION: usize = 4;
    /// `flags` (u32).
    pub const FLAGS: usize = 8;
    /// `capacity` (u64, sectors).
    pub const CAPACITY: usize = 12;
    /// `grainSize` (u64, sectors).
    pub const GRAIN_SIZE: usize = 20;
    /// `descriptorOffset` (u64, sectors).
    pub const DESCRIPTOR_OFFSET: usize = 28;
    /// `descriptorSize` (u64, sectors).
    pub const DESCRIPTOR_SIZE: usize = 36;
    /// `numGTEsPerGT` (u32).
    pub const GTES_PER_GT: usize = 44;
    /// `rgdOffset` (u64, sectors).
    pub const RGD_OFFSET: usize = 48;
    /// `gdOffset` (u64, sectors).
    pub const GD_OFFSET: usize = 56;
    /// `overHead` (u64, sectors).
    pub const OVERHEAD: usize = 64;
    /// `compressAlgorithm` (u16).
    pub const COMPRESS_ALGORITHM: usize = 77;
}

impl SparseHeader {
    /// Parses and checks a header found at byte `at` of its file.
    pub fn parse(b: &[u8], at: u64) -> Result<Self> {
        if b.len() < 512 || &b[0..4] != b"KDMV" {
            return Err(Error::corrupt("missing KDMV sparse-extent magic", at));
        }
        let h = SparseHeader {
            version: u32_at(b, field::VERSION),
            flags: u32_at(b, field::FLAGS),
            capacity: u64_at(b, field::CAPACITY),
            grain_sectors: u64_at(b, field::GRAIN_SIZE),
            descriptor_offset: u64_at(b, field::DESCRIPTOR_OFFSET),
            descriptor_size: u64_at(b, field::DESCRIPTOR_SIZE),
            gtes_per_gt: u32_at(b, field::GTES_PER_GT),
            rgd_offset: u64_at(b, field::RGD_OFFSET),
            gd_offset: u64_at(b, field::GD_OFFSET),
            overhead: u64_at(b, field::OVERHEAD),
            compress_algorithm: u16_at(b, field::COMPRESS_ALGORITHM),
        };
        if !(1..=3).contains(&h.version) {
            return Err(Error::unsupported(format!(
                "VMDK sparse extent version {}",
                h.version
            )));
        }
        if h.grain_sectors == 0 || !h.grain_sectors.is_power_of_two() {
            return Err(Error::corrupt(
                format!("grain size of {} sectors is not a power of two", h.grain_sectors),
                at + field::GRAIN_SIZE as u64,
            ));
        }
        check_limit(
            "VMDK grain size",
            h.grain_sectors.saturating_mul(SECTOR),
            MAX_GRAIN_SIZE,
        )?;
        if h.gtes_per_gt == 0 {
            return Err(Error::corrupt(
                "zero entries per grain table",
                at + field::GTES_PER_GT as u64,
            ));
        }
        check_limit(
            "VMDK grain-table entries",
            u64::from(h.gtes_per_gt),
            MAX_GTES_PER_GT,
        )?;
        check_limit(
            "VMDK extent capacity (sectors)",
            h.capacity,
            MAX_EXTENT_CAPACITY / SECTOR,
        )?;
        if h.compressed() && h.compress_algorithm != COMPRESS_DEFLATE {
            return Err(Error::unsupported(format!(
                "VMDK compression algorithm {}",
                h.compress_algorithm
            )));
        }
        Ok(h)
    }

    /// True when grains are deflate-compressed.
    pub fn compressed(&self) -> bool {
        self.flags & FLAG_COMPRESSED != 0
    }

    /// True when grains carry markers (streamOptimized).
    pub fn markers(&self) -> bool {
        self.flags & FLAG_MARKERS != 0
    }

    /// Serialises the header (used by the streamOptimized writer).
    pub fn to_bytes(&self) -> [u8; 512] {
        let mut b = [0u8; 512];
        b[0..4].copy_from_slice(b"KDMV");
        b[4..8].copy_from_slice(&self.version.to_le_bytes());
        b[8..12].copy_from_slice(&self.flags.to_le_bytes());
        b[12..20].copy_from_slice(&self.capacity.to_le_bytes());
        b[20..28].copy_from_slice(&self.grain_sectors.to_le_bytes());
        b[28..36].copy_from_slice(&self.descriptor_offset.to_le_bytes());
        b[36..44].copy_from_slice(&self.descriptor_size.to_le_bytes());
        b[44..48].copy_from_slice(&self.gtes_per_gt.to_le_bytes());
        b[48..56].copy_from_slice(&self.rgd_offset.to_le_bytes());
        b[56..64].copy_from_slice(&self.gd_offset.to_le_bytes());
        b[64..72].copy_from_slice(&self.overhead.to_le_bytes());
        // uncleanShutdown = 0, then the newline test characters.
        b[73] = b'\n';
        b[74] = b' ';
        b[75] = b'\r';
        b[76] = b'\n';
        b[77..79].copy_from_slice(&self.compress_algorithm.to_le_bytes());
        b
    }
}

/// The header of an ESXi vmfsSparse ("COWD") extent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CowdHeader {
    /// Virtual size in sectors.
    pub capacity: u64,
    /// Sectors per grain.
    pub grain_sectors: u64,
    /// Sector of the grain directory.
    pub gd_offset: u64,
    /// Entries in the grain directory.
    pub gd_entries: u64,
}

/// Entries per grain table in a COWD extent (fixed by the format).
pub const COWD_GTES_PER_GT: u32 = 4096;

/// Byte offsets of the COWD header's fields, for mutation tests.
pub mod cowd_field {
    /// `version` (u32).
    pub const VERSION: usize = 4;
    /// `numSectors` (u32): capacity.
    pub const CAPACITY: usize = 12;
    /// `grainSize` (u32, sectors).
    pub const GRAIN_SIZE: usize = 16;
    /// `gdOffset` (u32, sectors).
    pub const GD_OFFSET: usize = 20;
    /// `numGDEntries` (u32).
    pub const GD_ENTRIES: usize = 24;
}

impl CowdHeader {
    /// Parses and checks a COWD header found at byte `at`.
    pub fn parse(b: &[u8], at: u64) -> Result<Self> {
        if b.len() < 512 || &b[0..4] != b"COWD" {
            return Err(Error::corrupt("missing COWD magic", at));
        }
        let version = u32_at(b, cowd_field::VERSION);
        if version != 1 {
            return Err(Error::unsupported(format!("COWD extent version {version}")));
        }
        let h = CowdHeader {
            capacity: u64::from(u32_at(b, cowd_field::CAPACITY)),
            grain_sectors: u64::from(u32_at(b, cowd_field::GRAIN_SIZE)),
            gd_offset: u64::from(u32_at(b, cowd_field::GD_OFFSET)),
            gd_entries: u64::from(u32_at(b, cowd_field::GD_ENTRIES)),
        };
        if h.grain_sectors == 0 || !h.grain_sectors.is_power_of_two() {
            return Err(Error::corrupt(
                format!("grain size of {} sectors is not a power of two", h.grain_sectors),
                at + cowd_field::GRAIN_SIZE as u64,
            ));
        }
        check_limit("VMDK grain size", h.grain_sectors * SECTOR, MAX_GRAIN_SIZE)?;
        check_limit("VMDK grain-directory entries", h.gd_entries, MAX_GD_ENTRIES)?;
        Ok(h)
    }
}

/// What a streamOptimized marker announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// A compressed grain for guest sector `lba`, `size` bytes following the 12-byte marker.
    Grain {
        /// Guest sector of the grain.
        lba: u64,
        /// Compressed length.
        size: u32,
    },
    /// End of stream.
    Eos,
    /// A grain table of `sectors` sectors follows in the next sector.
    GrainTable {
        /// Length of the table.
        sectors: u64,
    },
    /// A grain directory of `sectors` sectors follows.
    GrainDirectory {
        /// Length of the directory.
        sectors: u64,
    },
    /// A footer (a copy of the header) follows.
    Footer,
    /// A metadata marker of a type we do not know.
    Unknown(u32),
}

/// Marker type codes.
pub const MARKER_EOS: u32 = 0;
/// Grain-table marker.
pub const MARKER_GT: u32 = 1;
/// Grain-directory marker.
pub const MARKER_GD: u32 = 2;
/// Footer marker.
pub const MARKER_FOOTER: u32 = 3;

impl Marker {
    /// Parses the first 16 bytes of a marker sector.
    pub fn parse(b: &[u8; 16]) -> Marker {
        let val = u64_at(b, 0);
        let size = u32_at(b, 8);
        if size != 0 {
            return Marker::Grain { lba: val, size };
        }
        match u32_at(b, 12) {
            MARKER_EOS => Marker::Eos,
            MARKER_GT => Marker::GrainTable { sectors: val },
            MARKER_GD => Marker::GrainDirectory { sectors: val },
            MARKER_FOOTER => Marker::Footer,
            t => Marker::Unknown(t),
        }
    }

    /// A metadata marker sector (`val` sectors of type `kind` follow).
    pub fn metadata_sector(val: u64, kind: u32) -> [u8; 512] {
        let mut b = [0u8; 512];
        b[0..8].copy_from_slice(&val.to_le_bytes());
        b[12..16].copy_from_slice(&kind.to_le_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SparseHeader {
        SparseHeader {
            version: 3,
            flags: FLAG_NL_TEST | FLAG_COMPRESSED | FLAG_MARKERS,
            capacity: 2048,
            grain_sectors: 128,
            descriptor_offset: 1,
            descriptor_size: 20,
            gtes_per_gt: 512,
            rgd_offset: 0,
            gd_offset: GD_AT_END,
            overhead: 128,
            compress_algorithm: 1,
        }
    }

    #[test]
    fn header_round_trips() {
        let h = sample();
        assert_eq!(SparseHeader::parse(&h.to_bytes(), 0).unwrap(), h);
    }

    #[test]
    fn grain_size_is_capped() {
        let mut h = sample();
        h.grain_sectors = (MAX_GRAIN_SIZE / SECTOR) * 2;
        let e = SparseHeader::parse(&h.to_bytes(), 0).unwrap_err();
        assert!(matches!(e, Error::LimitExceeded { .. }), "{e}");
    }

    #[test]
    fn gtes_per_gt_is_capped() {
        let mut h = sample();
        h.gtes_per_gt = (MAX_GTES_PER_GT + 1) as u32;
        let e = SparseHeader::parse(&h.to_bytes(), 0).unwrap_err();
        assert!(matches!(e, Error::LimitExceeded { .. }), "{e}");
    }

    #[test]
    fn capacity_is_capped() {
        let mut h = sample();
        h.capacity = MAX_EXTENT_CAPACITY / SECTOR + 1;
        let e = SparseHeader::parse(&h.to_bytes(), 0).unwrap_err();
        assert!(matches!(e, Error::LimitExceeded { .. }), "{e}");
    }

    #[test]
    fn cowd_gd_entries_are_capped() {
        let mut b = [0u8; 512];
        b[0..4].copy_from_slice(b"COWD");
        b[4..8].copy_from_slice(&1u32.to_le_bytes());
        b[16..20].copy_from_slice(&512u32.to_le_bytes());
        b[24..28].copy_from_slice(&((MAX_GD_ENTRIES + 1) as u32).to_le_bytes());
        let e = CowdHeader::parse(&b, 0).unwrap_err();
        assert!(matches!(e, Error::LimitExceeded { .. }), "{e}");
    }

    #[test]
    fn markers_parse() {
        let m = Marker::metadata_sector(4, MARKER_GT);
        let head: [u8; 16] = m[..16].try_into().unwrap();
        assert_eq!(Marker::parse(&head), Marker::GrainTable { sectors: 4 });
        assert_eq!(Marker::parse(&[0; 16]), Marker::Eos);
    }
}
