//! streamOptimized writer, laid out as VMware writes it: header with
//! `gdOffset = GD_AT_END`, embedded descriptor, compressed grains with
//! markers in LBA order, each grain table (with its marker) as soon as its
//! 512 grains are complete, then the grain directory, footer and
//! end-of-stream marker.
//!
//! Grains are compressed by the encoder on the copier's worker threads;
//! `write_chunk` only appends. Memory is the grain directory plus one grain
//! table. The CID is a CRC-32 of the stored grains, so output bytes depend
//! only on the disk's content. Like VMware's exporters, the extent line is
//! RDONLY and every grain table is written, empty ones included (2.5 KiB
//! per 32 MiB of disk). The extent name in the descriptor is always
//! "disk.vmdk" (readers ignore it for a monolithic stream, and a fixed name
//! keeps the output independent of the file name).

use super::header::{
    Marker, SparseHeader, COMPRESS_DEFLATE, FLAG_COMPRESSED, FLAG_MARKERS, FLAG_NL_TEST, GD_AT_END,
    MARKER_FOOTER, MARKER_GD, MARKER_GT, SECTOR,
};
use super::stream::GRAIN_MARKER_LEN;
use crate::block::is_zero;
use crate::error::{Error, Result};
use crate::sink::{
    ChunkEncoder, ClusterData, Compression, EncodedChunk, ImageWriter, Preallocation, WriteOptions,
    WriteSummary,
};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// Grain size written: 64 KiB, as VMware does.
pub const WRITE_GRAIN_SIZE: u64 = 64 << 10;
/// Grain-table entries per table, as VMware does.
const GTES_PER_GT: u64 = 512;
/// Sectors reserved for the embedded descriptor (from sector 1).
const DESCRIPTOR_SECTORS: u64 = 20;
/// Sectors before the first grain (64 KiB, so grains start aligned).
const OVERHEAD_SECTORS: u64 = 128;
/// Output is flushed to the file in writes of about this size.
const WRITE_BUFFER: usize = 4 << 20;

/// Compresses non-zero grains (zlib, as VMware) on the copier's threads.
#[derive(Debug, Clone, Copy)]
struct GrainEncoder {
    level: u32,
}

/// Compresses one grain, padding a short last grain with zeros.
fn compress_grain(data: &[u8], level: u32) -> Result<Vec<u8>> {
    let mut e = flate2::write::ZlibEncoder::new(
        Vec::with_capacity(data.len() / 2),
        flate2::Compression::new(level),
    );
    let pad = WRITE_GRAIN_SIZE as usize - data.len().min(WRITE_GRAIN_SIZE as usize);
    e.write_all(data)
        .and_then(|_| e.write_all(&vec![0u8; pad]))
        .map_err(|e| Error::io("compressing a grain", e))?;
    e.finish().map_err(|e| Error::io("compressing a grain", e))
}

impl ChunkEncoder for GrainEncoder {
    fn encode(&self, offset: u64, data: Vec<u8>) -> Result<EncodedChunk> {
        let clusters = data
            .chunks(WRITE_GRAIN_SIZE as usize)
            .map(|c| {
                if is_zero(c) {
                    Ok(ClusterData::Zero)
                } else {
                    compress_grain(c, self.level).map(ClusterData::Compressed)
                }
            })
            .collect::<Result<_>>()?;
        Ok(EncodedChunk {
            offset,
            data,
            clusters,
        })
    }
}

/// Writes a streamOptimized VMDK into a fresh file.
#[derive(Debug)]
pub struct VmdkWriter {
    file: File,
    size: u64,
    level: u32,
    /// File offset where `buf` starts.
    buf_at: u64,
    buf: Vec<u8>,
    gd: Vec<u32>,
    gt: Vec<u32>,
    /// Index of the grain table being filled.
    gt_index: u64,
    /// Lowest grain index a later chunk may still write.
    next_grain: u64,
    data_bytes: u64,
    crc: flate2::Crc,
    notes: Vec<String>,
}

impl VmdkWriter {
    /// Prepares `file` (empty) to hold a `size`-byte disk.
    pub fn create(file: File, size: u64, opts: &WriteOptions) -> Result<Self> {
        if let Some(cs) = opts.cluster_size {
            if cs != WRITE_GRAIN_SIZE {
                return Err(Error::invalid(format!(
                    "VMDK output uses {WRITE_GRAIN_SIZE}-byte grains, not {cs}"
                )));
            }
        }
        if opts.compression == Some(Compression::Zstd) {
            return Err(Error::invalid("streamOptimized VMDK compresses with zlib only"));
        }
        if opts.preallocation == Preallocation::Full {
            return Err(Error::invalid("streamOptimized VMDK cannot be preallocated"));
        }
        match opts.subformat.as_deref() {
            None | Some("streamOptimized") => {}
            Some(other) => {
                return Err(Error::unsupported(format!(
                    "VMDK subformat '{other}' (v2x writes streamOptimized)"
                )))
            }
        }
        let level = match opts.compression_level {
            None => 6,
            Some(l @ 0..=9) => l as u32,
            Some(l) => return Err(Error::invalid(format!("zlib level {l} (expected 0..9)"))),
        };
        // Grain offsets are 32-bit sectors; VMware's own limit is 62 TiB.
        crate::error::check_limit("VMDK output size", size, super::header::MAX_EXTENT_CAPACITY)?;
        let mut notes = Vec::new();
        let rounded = size.div_ceil(SECTOR) * SECTOR;
        if rounded != size {
            notes.push(format!(
                "virtual size rounded up from {size} to {rounded} bytes (whole sectors)"
            ));
        }
        let grains = rounded.div_ceil(WRITE_GRAIN_SIZE);
        let n_gd = grains.div_ceil(GTES_PER_GT) as usize;
        Ok(VmdkWriter {
            file,
            size: rounded,
            level,
            buf_at: OVERHEAD_SECTORS * SECTOR,
            buf: Vec::with_capacity(WRITE_BUFFER + WRITE_GRAIN_SIZE as usize * 2),
            gd: vec![0; n_gd],
            gt: vec![0; GTES_PER_GT as usize],
            gt_index: 0,
            next_grain: 0,
            data_bytes: 0,
            crc: flate2::Crc::new(),
            notes,
        })
    }

    /// File offset the next appended byte lands at.
    fn pos(&self) -> u64 {
        self.buf_at + self.buf.len() as u64
    }

    fn sector(&self) -> Result<u32> {
        u32::try_from(self.pos() / SECTOR)
            .map_err(|_| Error::unsupported("streamOptimized output larger than 2 TiB"))
    }

    fn pad_to_sector(&mut self) {
        let n = self.buf.len().next_multiple_of(SECTOR as usize);
        self.buf.resize(n, 0);
    }

    fn flush(&mut self, force: bool) -> Result<()> {
        if self.buf.is_empty() || (!force && self.buf.len() < WRITE_BUFFER) {
            return Ok(());
        }
        self.file
            .write_all_at(&self.buf, self.buf_at)
            .map_err(|e| Error::io(format!("writing VMDK output at {:#x}", self.buf_at), e))?;
        self.buf_at += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Writes out finished grain tables (with their markers) until table `upto` is the current one.
    fn advance_tables(&mut self, upto: u64) -> Result<()> {
        while self.gt_index < upto {
            // Every table is written, empty ones too, as VMware's exporters do.
            let table_sectors = GTES_PER_GT * 4 / SECTOR;
            self.buf
                .extend_from_slice(&Marker::metadata_sector(table_sectors, MARKER_GT));
            let at = self.sector()?;
            for e in &self.gt {
                self.buf.extend_from_slice(&e.to_le_bytes());
            }
            self.gd[self.gt_index as usize] = at;
            self.gt.fill(0);
            self.gt_index += 1;
            self.flush(false)?;
        }
        Ok(())
    }

    /// Appends one compressed grain with its marker.
    fn put_grain(&mut self, g: u64, compressed: &[u8]) -> Result<()> {
        self.advance_tables(g / GTES_PER_GT)?;
        let at = self.sector()?;
        let lba = g * (WRITE_GRAIN_SIZE / SECTOR);
        let size = u32::try_from(compressed.len()).map_err(|_| Error::invalid("grain too large"))?;
        self.buf.extend_from_slice(&lba.to_le_bytes());
        self.buf.extend_from_slice(&size.to_le_bytes());
        self.buf.extend_from_slice(compressed);
        self.pad_to_sector();
        self.gt[(g % GTES_PER_GT) as usize] = at;
        self.crc.update(&lba.to_le_bytes());
        self.crc.update(compressed);
        debug_assert_eq!(GRAIN_MARKER_LEN, 12);
        self.flush(false)
    }

    fn header(&self, gd_offset: u64) -> SparseHeader {
        SparseHeader {
            version: 3,
            flags: FLAG_NL_TEST | FLAG_COMPRESSED | FLAG_MARKERS,
            capacity: self.size / SECTOR,
            grain_sectors: WRITE_GRAIN_SIZE / SECTOR,
            descriptor_offset: 1,
            descriptor_size: DESCRIPTOR_SECTORS,
            gtes_per_gt: GTES_PER_GT as u32,
            rgd_offset: 0,
            gd_offset,
            overhead: OVERHEAD_SECTORS,
            compress_algorithm: COMPRESS_DEFLATE,
        }
    }

    fn descriptor(&self, cid: u32) -> String {
        let sectors = self.size / SECTOR;
        let cylinders = (sectors / (255 * 63)).clamp(1, 65535);
        format!(
            "# Disk DescriptorFile\nversion=1\nCID={cid:08x}\nparentCID=ffffffff\n\
             createType=\"streamOptimized\"\n\n# Extent description\n\
             RDONLY {sectors} SPARSE \"disk.vmdk\"\n\n# The Disk Data Base\n#DDB\n\n\
             ddb.adapterType = \"lsilogic\"\nddb.geometry.cylinders = \"{cylinders}\"\n\
             ddb.geometry.heads = \"255\"\nddb.geometry.sectors = \"63\"\n\
             ddb.virtualHWVersion = \"4\"\n"
        )
    }
}

impl ImageWriter for VmdkWriter {
    fn cluster_size(&self) -> u64 {
        WRITE_GRAIN_SIZE
    }

    fn encoder(&self) -> Arc<dyn ChunkEncoder> {
        Arc::new(GrainEncoder { level: self.level })
    }

    fn write_chunk(&mut self, chunk: &EncodedChunk) -> Result<()> {
        if chunk.offset % WRITE_GRAIN_SIZE != 0 {
            return Err(Error::invalid(format!(
                "chunk at {:#x} is not grain-aligned",
                chunk.offset
            )));
        }
        let first = chunk.offset / WRITE_GRAIN_SIZE;
        if first < self.next_grain {
            return Err(Error::invalid(format!(
                "chunk at {:#x} arrived out of order",
                chunk.offset
            )));
        }
        let end = chunk.offset + chunk.data.len() as u64;
        if end > self.size {
            return Err(Error::invalid(format!(
                "chunk ends at {end:#x}, past the {}-byte disk",
                self.size
            )));
        }
        for (i, c) in chunk.clusters.iter().enumerate() {
            let g = first + i as u64;
            match c {
                ClusterData::Zero => {}
                ClusterData::Compressed(bytes) => {
                    self.put_grain(g, bytes)?;
                    self.data_bytes += chunk.cluster_bytes(i, WRITE_GRAIN_SIZE).len() as u64;
                }
                ClusterData::Plain => {
                    let data = chunk.cluster_bytes(i, WRITE_GRAIN_SIZE);
                    let bytes = compress_grain(data, self.level)?;
                    self.put_grain(g, &bytes)?;
                    self.data_bytes += data.len() as u64;
                }
            }
        }
        self.next_grain = first + chunk.clusters.len() as u64;
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<WriteSummary> {
        self.advance_tables(self.gd.len() as u64)?;
        let gd_bytes = (self.gd.len() as u64 * 4).next_multiple_of(SECTOR);
        self.buf
            .extend_from_slice(&Marker::metadata_sector(gd_bytes / SECTOR, MARKER_GD));
        let gd_at = u64::from(self.sector()?);
        let gd = std::mem::take(&mut self.gd);
        for e in &gd {
            self.buf.extend_from_slice(&e.to_le_bytes());
        }
        self.pad_to_sector();
        self.buf
            .extend_from_slice(&Marker::metadata_sector(1, MARKER_FOOTER));
        self.buf.extend_from_slice(&self.header(gd_at).to_bytes());
        // End-of-stream marker: one zero sector.
        self.buf.extend_from_slice(&[0u8; SECTOR as usize]);
        self.flush(true)?;
        let file_size = self.pos();

        let mut cid = self.crc.sum();
        if cid == 0xffff_ffff || cid == 0xffff_fffe {
            cid ^= 1;
        }
        let mut head = vec![0u8; (OVERHEAD_SECTORS * SECTOR) as usize];
        head[..SECTOR as usize].copy_from_slice(&self.header(GD_AT_END).to_bytes());
        let desc = self.descriptor(cid);
        let room = (DESCRIPTOR_SECTORS * SECTOR) as usize;
        debug_assert!(desc.len() <= room);
        let d = &mut head[SECTOR as usize..SECTOR as usize + room];
        d[..desc.len()].copy_from_slice(desc.as_bytes());
        self.file
            .write_all_at(&head, 0)
            .map_err(|e| Error::io("writing VMDK header", e))?;
        Ok(WriteSummary {
            virtual_size: self.size,
            data_bytes: self.data_bytes,
            file_size,
            notes: std::mem::take(&mut self.notes),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_size_is_capped_and_options_checked() {
        let f = || tempfile::tempfile().unwrap();
        let opts = WriteOptions::default();
        let e = VmdkWriter::create(f(), super::super::header::MAX_EXTENT_CAPACITY + 1, &opts).unwrap_err();
        assert!(matches!(e, Error::LimitExceeded { .. }), "{e}");
        let zstd = WriteOptions {
            compression: Some(Compression::Zstd),
            ..WriteOptions::default()
        };
        assert!(matches!(
            VmdkWriter::create(f(), 1 << 20, &zstd),
            Err(Error::Invalid(_))
        ));
        let flat = WriteOptions {
            subformat: Some("monolithicFlat".into()),
            ..WriteOptions::default()
        };
        assert!(matches!(
            VmdkWriter::create(f(), 1 << 20, &flat),
            Err(Error::Unsupported(_))
        ));
        let w = VmdkWriter::create(f(), 1000, &opts).unwrap();
        assert_eq!(w.size, 1024);
        assert_eq!(w.notes.len(), 1);
    }
}
