//! Dynamic VHDX writer.
//!
//! Layout: file identifier and both headers in the first 1 MiB, an empty
//! 1 MiB log at 1 MiB (LogGuid zero: nothing to replay), metadata at 2 MiB,
//! the BAT at 3 MiB, then payload blocks in guest order. Blocks that are all
//! zero stay NOT_PRESENT. Everything but the payload is written by `finish`,
//! so a crash leaves a file without valid headers rather than a wrong disk.
//! GUIDs are derived from the size and the data, so output is deterministic.

use crate::error::{Error, Result};
use crate::sink::{
    ChunkEncoder, ClusterData, EncodedChunk, ImageWriter, PlainEncoder, Preallocation, WriteOptions,
    WriteSummary,
};
use crate::vhdx::header::{
    crc32c_without, header_off, Guid, BAT_REGION, FILE_PARAMETERS, HEADER1_AT, HEADER2_AT, HEADER_LEN,
    LOGICAL_SECTOR_SIZE, MAX_DISK_SIZE, METADATA_REGION, PHYSICAL_SECTOR_SIZE, REGION1_AT, REGION2_AT,
    TABLE_LEN, VIRTUAL_DISK_ID, VIRTUAL_DISK_SIZE,
};
use crate::vhdx::map::MAX_BAT_ENTRIES;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

const MIB: u64 = 1 << 20;
const LOG_AT: u64 = MIB;
const METADATA_AT: u64 = 2 * MIB;
const BAT_AT: u64 = 3 * MIB;
/// Default payload block size (Hyper-V's default for dynamic disks).
pub const DEFAULT_BLOCK_SIZE: u64 = 32 * MIB;
const SECTOR: u64 = 512;
const FULLY_PRESENT: u64 = 6;

/// Writes a dynamic VHDX into a fresh file.
#[derive(Debug)]
pub struct VhdxDynamicWriter {
    file: File,
    size: u64,
    block_size: u64,
    chunk_ratio: u64,
    bat: Vec<u64>,
    bat_region_len: u64,
    /// File offset where the next payload block goes.
    next_block_at: u64,
    data_bytes: u64,
    digest: u32,
}

impl VhdxDynamicWriter {
    /// Prepares `file` (empty) to hold a `size`-byte disk. `opts.cluster_size`
    /// sets the block size (1 MiB to 256 MiB, power of two; default 32 MiB).
    pub fn create(file: File, size: u64, opts: &WriteOptions) -> Result<Self> {
        if opts.compression.is_some() {
            return Err(Error::invalid("VHDX output cannot be compressed"));
        }
        if opts.preallocation == Preallocation::Full {
            return Err(Error::unsupported("preallocated (fixed) VHDX output"));
        }
        match opts.subformat.as_deref() {
            None | Some("dynamic") => {}
            Some(other) => {
                return Err(Error::unsupported(format!(
                    "VHDX subformat '{other}' (v2x writes dynamic VHDX)"
                )))
            }
        }
        let block_size = opts.cluster_size.unwrap_or(DEFAULT_BLOCK_SIZE);
        if !(MIB..=256 * MIB).contains(&block_size) || !block_size.is_power_of_two() {
            return Err(Error::invalid(format!(
                "VHDX block size {block_size} must be a power of two from 1 MiB to 256 MiB"
            )));
        }
        if size > MAX_DISK_SIZE || size % SECTOR != 0 {
            return Err(Error::invalid(format!(
                "a VHDX disk must be a multiple of 512 bytes up to 64 TiB; this one has {size}"
            )));
        }
        let chunk_ratio = ((1u64 << 23) * SECTOR) / block_size;
        let payload = size.div_ceil(block_size);
        let entries = if payload == 0 {
            0
        } else {
            payload + (payload - 1) / chunk_ratio
        };
        // Our reader's cap bounds the table (64 MiB) and keeps the output readable.
        if entries > MAX_BAT_ENTRIES {
            return Err(Error::invalid(format!(
                "a {size}-byte VHDX needs {entries} BAT entries at {block_size}-byte blocks; \
                 use a larger block size"
            )));
        }
        let bat_region_len = (entries * 8).max(1).next_multiple_of(MIB);
        Ok(VhdxDynamicWriter {
            file,
            size,
            block_size,
            chunk_ratio,
            bat: vec![0; entries as usize],
            bat_region_len,
            next_block_at: BAT_AT + bat_region_len,
            data_bytes: 0,
            digest: 0,
        })
    }

    fn write(&self, at: u64, buf: &[u8], what: &str) -> Result<()> {
        self.file
            .write_all_at(buf, at)
            .map_err(|e| Error::io(format!("writing VHDX {what} at {at:#x}"), e))
    }

    fn guid(&self, salt: &[u8]) -> Guid {
        let a = crc32c::crc32c_append(self.digest, salt);
        let b = crc32c::crc32c_append(a, &self.size.to_le_bytes());
        let c = crc32c::crc32c_append(b, &self.block_size.to_le_bytes());
        let d = crc32c::crc32c_append(c, salt);
        let mut g = [0u8; 16];
        for (i, v) in [a, b, c, d].iter().enumerate() {
            g[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
        }
        g[7] = (g[7] & 0x0f) | 0x40;
        g[8] = (g[8] & 0x3f) | 0x80;
        g
    }

    fn metadata(&self) -> Vec<u8> {
        let mut m = vec![0u8; MIB as usize];
        m[..8].copy_from_slice(b"metadata");
        let params = [(self.block_size as u32).to_le_bytes(), [0; 4]].concat();
        let items: [(Guid, Vec<u8>, u32); 5] = [
            (FILE_PARAMETERS, params, 4),
            (VIRTUAL_DISK_SIZE, self.size.to_le_bytes().to_vec(), 6),
            (VIRTUAL_DISK_ID, self.guid(b"disk-id").to_vec(), 6),
            (LOGICAL_SECTOR_SIZE, 512u32.to_le_bytes().to_vec(), 6),
            (PHYSICAL_SECTOR_SIZE, 4096u32.to_le_bytes().to_vec(), 6),
        ];
        m[10..12].copy_from_slice(&(items.len() as u16).to_le_bytes());
        let mut at = TABLE_LEN;
        for (i, (id, v, flags)) in items.iter().enumerate() {
            let e = 32 + 32 * i;
            m[e..e + 16].copy_from_slice(id);
            m[e + 16..e + 20].copy_from_slice(&(at as u32).to_le_bytes());
            m[e + 20..e + 24].copy_from_slice(&(v.len() as u32).to_le_bytes());
            m[e + 24..e + 28].copy_from_slice(&flags.to_le_bytes());
            m[at..at + v.len()].copy_from_slice(v);
            at += 4096;
        }
        m
    }

    fn region_table(&self) -> Vec<u8> {
        let mut r = vec![0u8; TABLE_LEN];
        r[..4].copy_from_slice(b"regi");
        r[8..12].copy_from_slice(&2u32.to_le_bytes());
        let regions = [
            (BAT_REGION, BAT_AT, self.bat_region_len),
            (METADATA_REGION, METADATA_AT, MIB),
        ];
        for (i, (id, at, len)) in regions.iter().enumerate() {
            let e = 16 + 32 * i;
            r[e..e + 16].copy_from_slice(id);
            r[e + 16..e + 24].copy_from_slice(&at.to_le_bytes());
            r[e + 24..e + 28].copy_from_slice(&(*len as u32).to_le_bytes());
            r[e + 28..e + 32].copy_from_slice(&1u32.to_le_bytes());
        }
        let c = crc32c_without(&r, 4);
        r[4..8].copy_from_slice(&c.to_le_bytes());
        r
    }

    fn header(&self, sequence: u64) -> Vec<u8> {
        let mut h = vec![0u8; HEADER_LEN];
        h[..4].copy_from_slice(b"head");
        h[header_off::SEQUENCE..header_off::SEQUENCE + 8].copy_from_slice(&sequence.to_le_bytes());
        h[16..32].copy_from_slice(&self.guid(b"file-write"));
        h[32..48].copy_from_slice(&self.guid(b"data-write"));
        h[header_off::VERSION..header_off::VERSION + 2].copy_from_slice(&1u16.to_le_bytes());
        h[header_off::LOG_LENGTH..header_off::LOG_LENGTH + 4].copy_from_slice(&(MIB as u32).to_le_bytes());
        h[header_off::LOG_OFFSET..header_off::LOG_OFFSET + 8].copy_from_slice(&LOG_AT.to_le_bytes());
        let c = crc32c_without(&h, header_off::CHECKSUM);
        h[4..8].copy_from_slice(&c.to_le_bytes());
        h
    }
}

impl ImageWriter for VhdxDynamicWriter {
    fn cluster_size(&self) -> u64 {
        self.block_size
    }

    fn encoder(&self) -> Arc<dyn ChunkEncoder> {
        Arc::new(PlainEncoder {
            cluster_size: self.block_size,
        })
    }

    fn write_chunk(&mut self, chunk: &EncodedChunk) -> Result<()> {
        if chunk.offset % self.block_size != 0 {
            return Err(Error::invalid("VHDX chunk is not block aligned"));
        }
        for (i, c) in chunk.clusters.iter().enumerate() {
            let bytes = chunk.cluster_bytes(i, self.block_size);
            let guest = chunk.offset + i as u64 * self.block_size;
            let block = guest / self.block_size;
            let index = (block + block / self.chunk_ratio) as usize;
            if index >= self.bat.len() || guest + bytes.len() as u64 > self.size {
                return Err(Error::invalid("chunk past the end of the VHDX disk"));
            }
            match c {
                ClusterData::Zero => {}
                ClusterData::Plain => {
                    let at = self.next_block_at;
                    self.write(at, bytes, "payload block")?;
                    self.bat[index] = at | FULLY_PRESENT;
                    self.next_block_at += self.block_size;
                    self.digest = crc32c::crc32c_append(self.digest, &guest.to_le_bytes());
                    self.digest = crc32c::crc32c_append(self.digest, bytes);
                    self.data_bytes += bytes.len() as u64;
                }
                ClusterData::Compressed(_) => return Err(Error::invalid("VHDX blocks cannot be compressed")),
            }
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<WriteSummary> {
        let bat: Vec<u8> = self.bat.iter().flat_map(|e| e.to_le_bytes()).collect();
        self.write(BAT_AT, &bat, "BAT")?;
        self.write(METADATA_AT, &self.metadata(), "metadata")?;
        let regions = self.region_table();
        self.write(REGION1_AT, &regions, "region table")?;
        self.write(REGION2_AT, &regions, "region table")?;
        let mut id = vec![0u8; 8 + 512];
        id[..8].copy_from_slice(b"vhdxfile");
        for (i, u) in "v2x".encode_utf16().enumerate() {
            id[8 + 2 * i..10 + 2 * i].copy_from_slice(&u.to_le_bytes());
        }
        self.write(0, &id, "file identifier")?;
        self.write(HEADER1_AT, &self.header(1), "header")?;
        self.write(HEADER2_AT, &self.header(2), "header")?;
        self.file
            .set_len(self.next_block_at)
            .map_err(|e| Error::io("sizing VHDX output", e))?;
        Ok(WriteSummary {
            virtual_size: self.size,
            data_bytes: self.data_bytes,
            file_size: self.next_block_at,
            notes: Vec::new(),
        })
    }
}
