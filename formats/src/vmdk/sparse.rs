//! Sparse extents (hosted "KDMV", streamOptimized, ESXi "COWD"): opening
//! their grain directories, mapping, and reading grains with coalesced I/O.

use super::header::{
    CowdHeader, SparseHeader, COWD_GTES_PER_GT, FLAG_REDUNDANT_GD, GD_AT_END, MAX_DESCRIPTOR_SIZE,
    MAX_GD_ENTRIES, SECTOR,
};
use super::map::{check_gd, gd_entries, read_gd, Directory, GrainLoc, GrainMap, MAX_SCANNED_GRAINS};
use super::stream::{inflate_grain_with, max_compressed_len, read_footer, scan_markers, GRAIN_MARKER_LEN};
use crate::block::ExtentKind;
use crate::error::{check_limit, Error, Result};
use crate::file::HostFile;

/// Largest single read issued for a run of compressed grains.
const MAX_BATCH_READ: u64 = 8 << 20;

/// One sparse extent file.
#[derive(Debug)]
pub struct SparseExtent {
    file: HostFile,
    map: GrainMap,
    capacity: u64,
    markers: bool,
    notes: Vec<String>,
    /// The header, for hosted extents (None for COWD).
    pub header: Option<SparseHeader>,
    /// The embedded descriptor text, if the extent has one.
    pub embedded_descriptor: Option<Vec<u8>>,
}

/// Reads a grain directory and checks every entry; the index of a bad entry on failure.
fn load_gd(file: &HostFile, sector: u64, n: u64, gtes: u32) -> Result<std::result::Result<Vec<u32>, String>> {
    if sector == 0 || sector == GD_AT_END {
        return Ok(Err("no grain directory offset".into()));
    }
    let gd = match read_gd(file, sector, n) {
        Ok(gd) => gd,
        Err(e @ Error::LimitExceeded { .. }) => return Err(e),
        Err(e) => return Ok(Err(e.to_string())),
    };
    Ok(match check_gd(&gd, gtes, file.len()) {
        None => Ok(gd),
        Some(i) => Err(format!(
            "entry {i} ({:#x}) points past the end of the file",
            gd[i]
        )),
    })
}

impl SparseExtent {
    /// Opens a hosted sparse or streamOptimized extent.
    pub fn open_kdmv(file: HostFile) -> Result<Self> {
        let hb = file.read_vec(0, SECTOR as usize)?;
        let h = SparseHeader::parse(&hb, 0)?;
        let capacity = h.capacity * SECTOR;
        let grain = h.grain_sectors * SECTOR;
        let n_gd = gd_entries(capacity.div_ceil(grain), u64::from(h.gtes_per_gt));
        check_limit("VMDK grain-directory entries", n_gd, MAX_GD_ENTRIES)?;
        let embedded_descriptor = if h.descriptor_offset != 0 && h.descriptor_size != 0 {
            let len = h.descriptor_size.saturating_mul(SECTOR);
            check_limit("VMDK descriptor size", len, MAX_DESCRIPTOR_SIZE)?;
            let off = h
                .descriptor_offset
                .checked_mul(SECTOR)
                .ok_or_else(|| Error::corrupt("descriptor offset overflows", 28))?;
            Some(file.read_vec(off, len as usize)?)
        } else {
            None
        };

        let mut notes = Vec::new();
        let mut gd_sector = h.gd_offset;
        let rgd_sector = if h.flags & FLAG_REDUNDANT_GD != 0 {
            h.rgd_offset
        } else {
            0
        };
        let footer_gd = || match read_footer(&file) {
            Some(f) if f.grain_sectors == h.grain_sectors && f.gtes_per_gt == h.gtes_per_gt => f.gd_offset,
            _ => 0,
        };
        if h.markers() && gd_sector == GD_AT_END {
            gd_sector = footer_gd();
        }
        let mut primary = load_gd(&file, gd_sector, n_gd, h.gtes_per_gt)?;
        if primary.is_err() && h.markers() && h.gd_offset != GD_AT_END {
            // The header named a directory that is not there; a footer may still have one.
            let f = footer_gd();
            if f != gd_sector {
                if let Ok(gd) = load_gd(&file, f, n_gd, h.gtes_per_gt)? {
                    notes.push(format!(
                        "grain directory named by the header (sector {gd_sector}) is unusable; used the footer's (sector {f})"
                    ));
                    gd_sector = f;
                    primary = Ok(gd);
                }
            }
        }
        let redundant = if rgd_sector != 0 {
            load_gd(&file, rgd_sector, n_gd, h.gtes_per_gt)?.ok()
        } else {
            None
        };
        let dir = match (primary, redundant) {
            (Ok(gd), rgd) => Directory::Tables { gd, rgd },
            (Err(why), Some(rgd)) => {
                notes.push(format!(
                    "primary grain directory at sector {gd_sector} is damaged ({why}); used the redundant one at sector {rgd_sector}"
                ));
                Directory::Tables { gd: rgd, rgd: None }
            }
            (Err(_), None) if h.markers() => {
                let start = h
                    .overhead
                    .max(h.descriptor_offset.saturating_add(h.descriptor_size))
                    .max(1);
                let start = start.saturating_mul(SECTOR);
                let list = scan_markers(&file, start, h.grain_sectors, MAX_SCANNED_GRAINS)?;
                notes.push(format!(
                    "no usable grain directory; built the grain map by scanning {} grain markers",
                    list.len()
                ));
                Directory::Scanned(list)
            }
            (Err(why), None) => {
                return Err(Error::corrupt(
                    format!("grain directory at sector {gd_sector}: {why}, and no redundant copy"),
                    super::header::field::GD_OFFSET as u64,
                ))
            }
        };
        let map = GrainMap::new(grain, capacity, h.gtes_per_gt, h.compressed(), file.len(), dir);
        Ok(SparseExtent {
            file,
            map,
            capacity,
            markers: h.markers(),
            notes,
            header: Some(h),
            embedded_descriptor,
        })
    }

    /// Opens an ESXi vmfsSparse ("COWD") extent.
    pub fn open_cowd(file: HostFile) -> Result<Self> {
        let hb = file.read_vec(0, SECTOR as usize)?;
        let h = CowdHeader::parse(&hb, 0)?;
        let capacity = h.capacity * SECTOR;
        let grain = h.grain_sectors * SECTOR;
        let gd = match load_gd(&file, h.gd_offset, h.gd_entries, COWD_GTES_PER_GT)? {
            Ok(gd) => gd,
            Err(why) => {
                return Err(Error::corrupt(
                    format!("COWD grain directory: {why}"),
                    super::header::cowd_field::GD_OFFSET as u64,
                ))
            }
        };
        let dir = Directory::Tables { gd, rgd: None };
        let map = GrainMap::new(grain, capacity, COWD_GTES_PER_GT, false, file.len(), dir);
        Ok(SparseExtent {
            file,
            map,
            capacity,
            markers: false,
            notes: Vec::new(),
            header: None,
            embedded_descriptor: None,
        })
    }

    /// Virtual size of the extent in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Grain size in bytes.
    pub fn grain_size(&self) -> u64 {
        self.map.grain
    }

    /// The extent file.
    pub fn file(&self) -> &HostFile {
        &self.file
    }

    /// Notes from opening and reading (redundant directory used, scan fallback).
    pub fn notes(&self) -> Vec<String> {
        let mut n = self.notes.clone();
        n.extend(self.map.notes());
        n
    }

    /// Appends the allocation of `[off, off + len)` (extent-relative) as runs.
    pub fn map_into(&self, off: u64, len: u64, out: &mut Vec<(u64, ExtentKind)>) -> Result<()> {
        let grain = self.map.grain;
        let end = off + len;
        let mut pos = off;
        while pos < end {
            let g = pos / grain;
            let max = (end - pos).div_ceil(grain) + 1;
            let (loc, span) = self.map.lookup_span(&self.file, g, max)?;
            let run_end = (g + span).saturating_mul(grain).min(end);
            let kind = match loc {
                GrainLoc::Unallocated => ExtentKind::Unallocated,
                GrainLoc::Zero => ExtentKind::Zero,
                GrainLoc::Plain(_) | GrainLoc::Compressed(_) => ExtentKind::Data,
            };
            out.push((run_end - pos, kind));
            pos = run_end;
        }
        Ok(())
    }

    /// Passes a prefetch hint for extent bytes `[off, off + len)` to the
    /// file: stored grains, those that follow each other in the file as one
    /// range (a compressed grain counts as its longest possible stream, so
    /// back-to-back ones merge). Unallocated ranges, as (extent offset,
    /// length), go to `holes` for a parent. A table that cannot be read ends
    /// the hint; reading the data reports it.
    pub fn prefetch(&self, off: u64, len: u64, holes: &mut Vec<(u64, u64)>) {
        let grain = self.map.grain;
        let end = off.saturating_add(len).min(self.capacity());
        let mut run: Option<(u64, u64)> = None;
        let mut pos = off;
        while pos < end {
            let g = pos / grain;
            let Ok((loc, span)) = self
                .map
                .lookup_span(&self.file, g, (end - pos).div_ceil(grain) + 1)
            else {
                break;
            };
            let run_end = g.saturating_add(span).saturating_mul(grain).min(end);
            if run_end <= pos {
                break;
            }
            let stored = match loc {
                GrainLoc::Plain(at) => Some((at.saturating_add(pos % grain), run_end - pos)),
                GrainLoc::Compressed(at) => Some((at, max_compressed_len(grain))),
                GrainLoc::Unallocated => {
                    holes.push((pos, run_end - pos));
                    None
                }
                GrainLoc::Zero => None,
            };
            if let Some((at, n)) = stored {
                match &mut run {
                    Some((s, l)) if at >= *s && at <= s.saturating_add(*l) => {
                        *l = (*l).max(at.saturating_add(n) - *s)
                    }
                    _ => {
                        if let Some((s, l)) = run.replace((at, n)) {
                            self.file.prefetch(s, l);
                        }
                    }
                }
            }
            pos = run_end;
        }
        if let Some((s, l)) = run {
            self.file.prefetch(s, l);
        }
    }

    /// Reads `buf` at extent offset `off`. Unallocated ranges are zeroed
    /// and reported in `holes` as (buffer offset, length) for a parent to fill.
    pub fn read(&self, off: u64, buf: &mut [u8], holes: &mut Vec<(usize, usize)>) -> Result<()> {
        let grain = self.map.grain;
        let mut pieces: Vec<(usize, usize, GrainLoc)> = Vec::new();
        let mut pos = 0usize;
        while pos < buf.len() {
            let at = off + pos as u64;
            let g = at / grain;
            let left = (buf.len() - pos) as u64;
            let (loc, span) = self.map.lookup_span(&self.file, g, left.div_ceil(grain) + 1)?;
            let n = ((g + span) * grain - at).min(left) as usize;
            pieces.push((pos, n, loc));
            pos += n;
        }
        let mut i = 0;
        while i < pieces.len() {
            let (p, n, loc) = pieces[i];
            match loc {
                GrainLoc::Unallocated => {
                    buf[p..p + n].fill(0);
                    holes.push((p, n));
                    i += 1;
                }
                GrainLoc::Zero => {
                    buf[p..p + n].fill(0);
                    i += 1;
                }
                GrainLoc::Plain(fo) => {
                    // Coalesce grains that follow each other in the file.
                    let mut j = i + 1;
                    let mut total = n;
                    let mut next = fo + grain;
                    while let Some(&(_, m, GrainLoc::Plain(f))) = pieces.get(j) {
                        if f != next {
                            break;
                        }
                        total += m;
                        next += grain;
                        j += 1;
                    }
                    let in_grain = (off + p as u64) % grain;
                    self.file.read_exact_at(fo + in_grain, &mut buf[p..p + total])?;
                    i = j;
                }
                GrainLoc::Compressed(first) => {
                    // Group grains stored close together, in ascending file order.
                    let mut j = i + 1;
                    let mut prev = first;
                    while let Some(&(_, _, GrainLoc::Compressed(b))) = pieces.get(j) {
                        if b <= prev
                            || b - prev > max_compressed_len(grain) + SECTOR
                            || b - first > MAX_BATCH_READ
                        {
                            break;
                        }
                        prev = b;
                        j += 1;
                    }
                    self.read_compressed_group(off, buf, &pieces[i..j])?;
                    i = j;
                }
            }
        }
        Ok(())
    }

    /// Reads a run of compressed grains that lie close together in the file with one read.
    fn read_compressed_group(
        &self,
        off: u64,
        buf: &mut [u8],
        group: &[(usize, usize, GrainLoc)],
    ) -> Result<()> {
        let grain = self.map.grain;
        let maxc = max_compressed_len(grain) + GRAIN_MARKER_LEN;
        let loc = |e: &(usize, usize, GrainLoc)| match e.2 {
            GrainLoc::Compressed(f) => f,
            _ => 0,
        };
        let first = loc(&group[0]);
        let last = loc(&group[group.len() - 1]);
        let flen = self.file.len();
        if first >= flen {
            return Err(Error::corrupt(
                "compressed grain lies past the end of the file",
                first,
            ));
        }
        let end = last.saturating_add(maxc).min(flen);
        let mut span = vec![0u8; (end - first) as usize];
        self.file.read_exact_at(first, &mut span)?;
        let mut out = vec![0u8; grain as usize];
        let mut inflater = None;
        for e in group {
            let (p, n, _) = *e;
            let fo = loc(e);
            let at = off + p as u64;
            let g = at / grain;
            let need = (self.capacity.saturating_sub(g * grain)).min(grain) as usize;
            let rel = (fo - first) as usize;
            let data: std::borrow::Cow<[u8]> = if self.markers {
                let head = span
                    .get(rel..rel + GRAIN_MARKER_LEN as usize)
                    .ok_or_else(|| Error::corrupt("grain marker lies past the end of the file", fo))?;
                let size = u64::from(u32::from_le_bytes([head[8], head[9], head[10], head[11]]));
                if size == 0 || size > max_compressed_len(grain) {
                    return Err(Error::corrupt(
                        format!("grain marker claims {size} compressed bytes for a {grain}-byte grain"),
                        fo,
                    ));
                }
                let dstart = rel + GRAIN_MARKER_LEN as usize;
                match span.get(dstart..dstart + size as usize) {
                    Some(d) => d.into(),
                    None => self.file.read_vec(fo + GRAIN_MARKER_LEN, size as usize)?.into(),
                }
            } else {
                span.get(rel..)
                    .ok_or_else(|| Error::corrupt("grain lies past the end of the file", fo))?
                    .into()
            };
            inflate_grain_with(&mut inflater, &data, &mut out, need, fo)?;
            let ig = (at % grain) as usize;
            buf[p..p + n].copy_from_slice(&out[ig..ig + n]);
        }
        Ok(())
    }
}
