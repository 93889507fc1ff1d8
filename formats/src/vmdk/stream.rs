//! streamOptimized helpers: finding the footer, scanning grain markers when
//! no usable grain directory exists, and inflating one grain with a bounded
//! output.

use super::header::{Marker, SparseHeader, MARKER_FOOTER, SECTOR};
use crate::error::{check_limit, Error, Result};
use crate::file::HostFile;
use flate2::{Decompress, FlushDecompress, Status};

/// Bytes of a grain marker before the compressed data (lba u64 + size u32).
pub const GRAIN_MARKER_LEN: u64 = 12;

/// Largest compressed grain accepted, for a grain of `grain` bytes: deflate
/// never expands data by more than a few bytes per 16 KiB block.
pub fn max_compressed_len(grain: u64) -> u64 {
    grain + grain / 8 + 4096
}

/// Reads the footer header of a `GD_AT_END` stream: the second-to-last
/// sector, preceded by a footer marker. None when the file has no footer.
pub fn read_footer(file: &HostFile) -> Option<SparseHeader> {
    let len = file.len();
    if len < 3 * SECTOR {
        return None;
    }
    let tail = file.read_vec(len - 3 * SECTOR, 3 * SECTOR as usize).ok()?;
    let marker: [u8; 16] = tail[..16].try_into().ok()?;
    if Marker::parse(&marker) != Marker::Footer {
        // qemu tolerates a missing footer marker; so do we, if the magic is there.
        let kind = u32::from_le_bytes(tail[12..16].try_into().ok()?);
        if kind != MARKER_FOOTER && &tail[512..516] != b"KDMV" {
            return None;
        }
    }
    SparseHeader::parse(&tail[512..1024], len - 2 * SECTOR).ok()
}

/// Builds a grain → marker-offset list by walking the markers from
/// `start` to the end-of-stream marker or the end of the file. Later
/// copies of a grain win. `grain_sectors` rejects misaligned grains;
/// more than `max_grains` markers (normally [`super::map::MAX_SCANNED_GRAINS`]) is refused.
pub fn scan_markers(
    file: &HostFile,
    start: u64,
    grain_sectors: u64,
    max_grains: u64,
) -> Result<Vec<(u64, u64)>> {
    let len = file.len();
    let mut pos = start;
    let mut found: Vec<(u64, u64)> = Vec::new();
    let mut head = [0u8; 16];
    while pos.checked_add(SECTOR).is_some_and(|e| e <= len) {
        file.read_exact_at(pos, &mut head)?;
        let step = match Marker::parse(&head) {
            Marker::Grain { lba, size } => {
                if lba % grain_sectors != 0 {
                    return Err(Error::corrupt(
                        format!("grain marker for sector {lba} is not grain-aligned"),
                        pos,
                    ));
                }
                check_limit("VMDK streamOptimized grains", found.len() as u64 + 1, max_grains)?;
                found.push((lba / grain_sectors, pos));
                (GRAIN_MARKER_LEN + u64::from(size)).div_ceil(SECTOR) * SECTOR
            }
            Marker::Eos => break,
            Marker::GrainTable { sectors } | Marker::GrainDirectory { sectors } => sectors
                .checked_add(1)
                .and_then(|s| s.checked_mul(SECTOR))
                .ok_or_else(|| Error::corrupt("metadata marker length overflows", pos))?,
            Marker::Footer => 2 * SECTOR,
            Marker::Unknown(t) => {
                return Err(Error::corrupt(
                    format!("unknown streamOptimized marker type {t}"),
                    pos,
                ))
            }
        };
        pos = match pos.checked_add(step) {
            Some(p) => p,
            None => break,
        };
    }
    // Stable sort keeps file order among duplicates; keep the last copy.
    found.sort_by_key(|e| e.0);
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(found.len());
    for e in found {
        match out.last_mut() {
            Some(last) if last.0 == e.0 => *last = e,
            _ => out.push(e),
        }
    }
    Ok(out)
}

/// Inflates one compressed grain (zlib, or raw deflate as some writers
/// emit) into `out`, which is exactly one grain long. At least `need`
/// bytes must come out; a grain that inflates past `out` is corrupt.
#[cfg(test)]
pub fn inflate_grain(data: &[u8], out: &mut [u8], need: usize, at: u64) -> Result<()> {
    inflate_grain_with(&mut None, data, out, need, at)
}

/// [`inflate_grain`] reusing a decompressor across the grains of one read.
pub fn inflate_grain_with(
    reuse: &mut Option<Decompress>,
    data: &[u8],
    out: &mut [u8],
    need: usize,
    at: u64,
) -> Result<()> {
    let zlib = data.len() >= 2 && data[0] & 0x0f == 8 && u16::from_be_bytes([data[0], data[1]]) % 31 == 0;
    let d = match reuse {
        Some(d) => {
            d.reset(zlib);
            d
        }
        None => reuse.insert(Decompress::new(zlib)),
    };
    let status = d
        .decompress(data, out, FlushDecompress::Finish)
        .map_err(|e| Error::corrupt(format!("compressed grain does not inflate: {e}"), at))?;
    let produced = d.total_out() as usize;
    if status != Status::StreamEnd && produced == out.len() {
        // Output is full but the stream goes on: it inflates past one grain.
        let mut probe = [0u8; 1];
        let used = d.total_in() as usize;
        let more = d.decompress(&data[used.min(data.len())..], &mut probe, FlushDecompress::Finish);
        if more.is_ok() && d.total_out() as usize > produced {
            return Err(Error::corrupt(
                "compressed grain inflates past the grain size",
                at,
            ));
        }
    }
    if produced < need {
        return Err(Error::corrupt(
            format!("compressed grain inflates to {produced} bytes, expected {need}"),
            at,
        ));
    }
    out[produced..].fill(0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{write::ZlibEncoder, Compression};
    use std::io::Write;

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = ZlibEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn inflates_exact_grain() {
        let src: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
        let mut out = vec![0u8; 65536];
        inflate_grain(&zlib(&src), &mut out, 65536, 0).unwrap();
        assert_eq!(out, src);
    }

    #[test]
    fn zip_bomb_is_corrupt() {
        let c = zlib(&vec![0u8; 1 << 22]);
        let mut out = vec![0u8; 65536];
        let e = inflate_grain(&c, &mut out, 65536, 7).unwrap_err();
        assert!(matches!(e, Error::Corrupt { offset: 7, .. }), "{e}");
    }

    #[test]
    fn short_grain_is_corrupt() {
        let c = zlib(&[1u8; 100]);
        let mut out = vec![0u8; 65536];
        assert!(matches!(
            inflate_grain(&c, &mut out, 65536, 0),
            Err(Error::Corrupt { .. })
        ));
        assert!(matches!(
            inflate_grain(b"garbage!", &mut out, 65536, 0),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn scan_is_capped_by_file_and_finds_grains() {
        let mut f = vec![0u8; 4 * 512];
        let c = zlib(&[5u8; 512]);
        f[0..8].copy_from_slice(&1u64.to_le_bytes());
        f[8..12].copy_from_slice(&(c.len() as u32).to_le_bytes());
        f[12..12 + c.len()].copy_from_slice(&c);
        let file = HostFile::from_bytes("s", f);
        let v = scan_markers(&file, 0, 1, 10).unwrap();
        assert_eq!(v, vec![(1, 0)]);
        let e = scan_markers(&file, 0, 1, 0).unwrap_err();
        assert!(matches!(e, Error::LimitExceeded { .. }), "{e}");
    }
}
