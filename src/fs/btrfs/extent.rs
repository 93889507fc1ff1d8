//! File contents: EXTENT_DATA items (inline, regular, prealloc, holes) and
//! their decompression (zlib, zstd, LZO).

use super::items::{ty, Compression, ExtentBody, FileExtent};
use super::lzo;
use super::tree::{Key, Reader, TreeRoot};
use crate::fs::MAX_FILE_READ;
use std::io::Read;
use v2x_formats::error::check_limit;
use v2x_formats::{Error, Result};

/// btrfs never compresses more than 128 KiB into one extent, on disk or decompressed.
pub const MAX_COMPRESSED_EXTENT: u64 = 128 * 1024;
/// Largest zstd window btrfs uses (2^17 bytes).
pub const ZSTD_MAX_WINDOW_LOG: u32 = 17;

/// Decompresses `input` into at most `ram_bytes` bytes. `at` names the
/// physical offset for errors.
pub fn decompress(kind: Compression, input: &[u8], ram_bytes: u64, sector: u32, at: u64) -> Result<Vec<u8>> {
    check_limit("btrfs decompressed extent size", ram_bytes, MAX_COMPRESSED_EXTENT)?;
    let mut out = Vec::with_capacity(ram_bytes as usize);
    let bad =
        |e: std::io::Error| Error::corrupt(format!("btrfs {kind:?} extent does not decompress: {e}"), at);
    match kind {
        Compression::None => out.extend_from_slice(&input[..input.len().min(ram_bytes as usize)]),
        Compression::Zlib => {
            flate2::read::ZlibDecoder::new(input)
                .take(ram_bytes)
                .read_to_end(&mut out)
                .map_err(bad)?;
        }
        Compression::Zstd => {
            let mut dec = zstd::stream::read::Decoder::with_buffer(input).map_err(bad)?;
            // btrfs writes frames with at most a 128 KiB window; refusing
            // larger ones keeps a hostile frame from claiming a huge window buffer.
            dec.window_log_max(ZSTD_MAX_WINDOW_LOG).map_err(bad)?;
            dec.single_frame()
                .take(ram_bytes)
                .read_to_end(&mut out)
                .map_err(bad)?;
        }
        Compression::Lzo => return lzo::decompress_btrfs(input, ram_bytes as usize, sector as usize, at),
    }
    Ok(out)
}

/// Reads `[offset, offset + len)` of inode `ino` in `tree`, whose size is
/// `size`; stops at end of file. Holes and prealloc ranges read as zeros.
pub fn read_range(
    reader: &Reader,
    sector: u32,
    tree: TreeRoot,
    ino: u64,
    size: u64,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>> {
    if offset >= size || len == 0 {
        return Ok(Vec::new());
    }
    let end = offset.saturating_add(len).min(size);
    let n = end - offset;
    check_limit("btrfs read length", n, MAX_FILE_READ)?;
    let mut out = vec![0u8; n as usize];
    let lo = Key::first(ino, ty::EXTENT_DATA);
    let hi = Key::new(ino, ty::EXTENT_DATA, end - 1);
    reader.walk(tree, lo, hi, &mut |it| {
        let ext = FileExtent::parse(it.data, it.at)?;
        let start = it.key.offset;
        let ext_end = start.saturating_add(ext.num_bytes);
        if ext_end <= offset {
            return Ok(true);
        }
        // The part of this extent we want, in file offsets.
        let from = start.max(offset);
        let to = ext_end.min(end);
        if from >= to {
            return Ok(true);
        }
        let dst = &mut out[(from - offset) as usize..(to - offset) as usize];
        let skip = from - start;
        fill(reader, sector, &ext, skip, dst, it.at)?;
        Ok(true)
    })?;
    Ok(out)
}

/// Copies bytes `[skip, skip + dst.len())` of one extent into `dst`.
fn fill(reader: &Reader, sector: u32, ext: &FileExtent, skip: u64, dst: &mut [u8], at: u64) -> Result<()> {
    match &ext.body {
        ExtentBody::Prealloc => dst.fill(0),
        ExtentBody::Inline(raw) => {
            let data = if ext.compression == Compression::None {
                raw.clone()
            } else {
                decompress(ext.compression, raw, ext.ram_bytes, sector, at)?
            };
            copy_from(&data, skip, dst);
        }
        ExtentBody::Regular {
            disk_bytenr,
            disk_num_bytes,
            offset,
        } => {
            if *disk_bytenr == 0 {
                dst.fill(0);
                return Ok(());
            }
            let pos = offset
                .checked_add(skip)
                .ok_or_else(|| Error::corrupt("btrfs file extent offset overflows", at))?;
            if ext.compression == Compression::None {
                let logical = disk_bytenr
                    .checked_add(pos)
                    .ok_or_else(|| Error::corrupt("btrfs file extent address overflows", at))?;
                reader.read_logical(logical, dst, at)?;
            } else {
                check_limit(
                    "btrfs compressed extent size",
                    *disk_num_bytes,
                    MAX_COMPRESSED_EXTENT,
                )?;
                let mut raw = vec![0u8; *disk_num_bytes as usize];
                reader.read_logical(*disk_bytenr, &mut raw, at)?;
                let phys = reader.phys(*disk_bytenr);
                let data = decompress(ext.compression, &raw, ext.ram_bytes, sector, phys)?;
                copy_from(&data, pos, dst);
            }
        }
    }
    Ok(())
}

/// Copies `src[skip..]` into `dst`, zero-filling what `src` lacks.
fn copy_from(src: &[u8], skip: u64, dst: &mut [u8]) {
    let start = usize::try_from(skip).unwrap_or(usize::MAX).min(src.len());
    let avail = &src[start..];
    let n = avail.len().min(dst.len());
    dst[..n].copy_from_slice(&avail[..n]);
    dst[n..].fill(0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn zlib_and_zstd_round_trip() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&data).unwrap();
        let mut zl = z.finish().unwrap();
        zl.extend_from_slice(&[0; 100]); // sector padding after the stream
        assert_eq!(decompress(Compression::Zlib, &zl, 5000, 4096, 0).unwrap(), data);
        let mut zs = zstd::bulk::compress(&data, 3).unwrap();
        zs.extend_from_slice(&[0; 100]);
        assert_eq!(decompress(Compression::Zstd, &zs, 5000, 4096, 0).unwrap(), data);
    }

    #[test]
    fn zstd_window_is_capped() {
        let data = vec![7u8; 4096];
        let frame = |log: u32| {
            // Streamed, so the size is unknown and the window stays as asked.
            let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
            enc.set_parameter(zstd::zstd_safe::CParameter::WindowLog(log))
                .unwrap();
            enc.write_all(&data).unwrap();
            enc.finish().unwrap()
        };
        assert_eq!(
            decompress(Compression::Zstd, &frame(17), 4096, 4096, 0).unwrap(),
            data
        );
        assert!(decompress(Compression::Zstd, &frame(20), 4096, 4096, 0).is_err());
    }

    #[test]
    fn decompressed_size_is_capped() {
        let e = decompress(Compression::Zlib, &[], MAX_COMPRESSED_EXTENT + 1, 4096, 0).unwrap_err();
        assert_eq!(e.kind_name(), "limit-exceeded");
    }

    #[test]
    fn garbage_is_corrupt_not_a_panic() {
        for c in [Compression::Zlib, Compression::Zstd, Compression::Lzo] {
            let r = decompress(c, &[0xff; 64], 4096, 4096, 9);
            assert!(r.is_err(), "{c:?}");
        }
    }
}
