//! LVM2: PV labels and metadata areas ([`label`]), the text metadata
//! ([`text`]), the VG model ([`model`]), and here the assembly of VGs from
//! the PVs found on any volume into readable logical volumes.
//!
//! The newest metadata (highest seqno) over all PVs of a VG wins. An LV with
//! any extent on a PV that was not found is **left out** of the volume set,
//! with a warning naming the LV and the missing PV; the other LVs of the VG
//! are still listed.

pub mod label;
pub mod model;
pub mod text;

use super::{signature, Content, Volume, VolumeKind};
use model::{LvMeta, Vg};
use std::collections::BTreeMap;
use std::sync::Arc;
use v2x_formats::block::{check_range, BlockSource, Extent, ExtentList, ImageInfo};
use v2x_formats::error::mul;
use v2x_formats::{Error, Result};

pub use label::MAX_LVM_METADATA;
pub use model::{MAX_LVS, MAX_SEGMENTS};

/// Builds the LVs of every VG whose PVs appear among `volumes` (those whose
/// content is [`Content::LvmPv`]). Problems that leave a VG usable become
/// `warnings`; damaged labels or metadata are errors.
pub fn assemble(volumes: &[Volume], warnings: &mut Vec<String>) -> Result<Vec<Volume>> {
    // PV UUID -> volume index; VG id -> newest metadata.
    let mut pvs: BTreeMap<String, usize> = BTreeMap::new();
    let mut vgs: BTreeMap<String, Vg> = BTreeMap::new();
    for (i, v) in volumes.iter().enumerate() {
        if !matches!(v.content, Content::LvmPv { .. }) {
            continue;
        }
        let ctx = |e: Error| match e {
            Error::Corrupt { what, offset } => Error::corrupt(format!("{}: {what}", v.name), offset),
            other => other,
        };
        let Some(pv) = label::read_label(v.source.as_ref()).map_err(ctx)? else {
            continue;
        };
        if pvs.insert(pv.uuid.clone(), i).is_some() {
            warnings.push(format!("{}: duplicate LVM PV {} ignored", v.name, pv.uuid));
            continue;
        }
        for area in &pv.metadata_areas {
            let Some((text, at)) = label::read_metadata(v.source.as_ref(), *area).map_err(ctx)? else {
                continue;
            };
            let vg = model::parse_vg(&text, at).map_err(ctx)?;
            let key = if vg.id.is_empty() {
                vg.name.clone()
            } else {
                vg.id.clone()
            };
            match vgs.get(&key) {
                Some(old) if old.seqno >= vg.seqno => {}
                _ => {
                    vgs.insert(key, vg);
                }
            }
        }
    }
    let mut vg_list: Vec<Vg> = vgs.into_values().collect();
    vg_list.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = Vec::new();
    for vg in &vg_list {
        for p in &vg.pvs {
            if !pvs.contains_key(&p.id) {
                warnings.push(format!(
                    "VG {}: PV {} ({}) is missing; LVs using it are left out",
                    vg.name,
                    p.id,
                    p.device.as_deref().unwrap_or("no device hint")
                ));
            }
        }
        let mut lvs: Vec<&LvMeta> = vg.lvs.iter().filter(|l| l.visible).collect();
        lvs.sort_by(|a, b| a.name.cmp(&b.name));
        for lv in lvs {
            let full = format!("{}/{}", vg.name, lv.name);
            if let Some(kind) = &lv.unsupported {
                warnings.push(format!(
                    "{full}: segment type {kind:?} is not supported; LV left out"
                ));
                continue;
            }
            let missing = lv
                .segments
                .iter()
                .flat_map(|s| &s.stripes)
                .find(|(pv, _)| !pvs.contains_key(&vg.pvs[*pv].id));
            if let Some((pv, _)) = missing {
                warnings.push(format!("{full}: PV {} is missing; LV left out", vg.pvs[*pv].id));
                continue;
            }
            let source = Arc::new(LvSource::new(vg, lv, &pvs, volumes)?);
            let disk = lv
                .segments
                .first()
                .and_then(|s| s.stripes.first())
                .map_or(0, |(pv, _)| volumes[pvs[&vg.pvs[*pv].id]].disk);
            let content = signature::identify(source.as_ref())?;
            out.push(Volume {
                name: full,
                disk,
                kind: VolumeKind::LogicalVolume {
                    vg: vg.name.clone(),
                    lv: lv.name.clone(),
                    uuid: lv.id.clone(),
                },
                content,
                source,
            });
        }
    }
    Ok(out)
}

/// One segment in bytes: `[start, start + len)` of the LV, spread over
/// `areas` (PV source, byte offset of the stripe's first extent) in chunks of
/// `chunk` bytes (`len` for a linear segment).
struct Mapped {
    start: u64,
    len: u64,
    chunk: u64,
    areas: Vec<(Arc<dyn BlockSource>, u64)>,
}

/// A logical volume's bytes, read through its segments from the PVs.
pub struct LvSource {
    name: String,
    size: u64,
    segments: Vec<Mapped>,
}

impl LvSource {
    /// Maps `lv` of `vg` onto the PV volumes (`pvs`: PV UUID -> index into
    /// `volumes`). Every PV must be present; every area must fit its PV.
    fn new(vg: &Vg, lv: &LvMeta, pvs: &BTreeMap<String, usize>, volumes: &[Volume]) -> Result<Self> {
        let name = format!("{}/{}", vg.name, lv.name);
        let extent = mul(vg.extent_size, label::SECTOR, "LVM extent size", 0)?;
        // Every segment ends inside the LV, so their offsets below cannot overflow.
        let size = mul(lv.extents(), extent, "LV size", 0)?;
        let mut segments = Vec::new();
        for s in &lv.segments {
            let n = s.stripes.len() as u64;
            let len = s.extent_count * extent;
            let area_len = len / n;
            let mut areas = Vec::new();
            for (pv, pe) in &s.stripes {
                let meta = &vg.pvs[*pv];
                let vol = &volumes[pvs[&meta.id]];
                let at = mul(*pe, extent, "LVM extent offset", 0)?
                    .checked_add(meta.pe_start.saturating_mul(label::SECTOR))
                    .filter(|a| a.checked_add(area_len).is_some_and(|e| e <= vol.source.size()));
                let Some(at) = at else {
                    return Err(Error::corrupt(
                        format!(
                            "LVM metadata: {name}: extents {pe}.. of PV {} lie past the end of {} ({} bytes)",
                            meta.id,
                            vol.name,
                            vol.source.size()
                        ),
                        0,
                    ));
                };
                areas.push((vol.source.clone(), at));
            }
            let chunk = if n == 1 {
                len
            } else {
                s.stripe_size * label::SECTOR
            };
            segments.push(Mapped {
                start: s.start_extent * extent,
                len,
                chunk,
                areas,
            });
        }
        Ok(LvSource { name, size, segments })
    }

    /// The PV byte run holding LV byte `off`: (segment, area, PV offset,
    /// length up to the end of the chunk or of `want`).
    fn locate(&self, off: u64, want: u64) -> (usize, usize, u64, u64) {
        let i = self.segments.partition_point(|s| s.start + s.len <= off);
        let s = &self.segments[i];
        let rel = off - s.start;
        let n = s.areas.len() as u64;
        let chunk_no = rel / s.chunk;
        let in_chunk = rel % s.chunk;
        let area = (chunk_no % n) as usize;
        let pv_off = s.areas[area].1 + (chunk_no / n) * s.chunk + in_chunk;
        let len = (s.chunk - in_chunk).min(s.start + s.len - off).min(want);
        (i, area, pv_off, len)
    }
}

impl BlockSource for LvSource {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(self.size, offset, buf.len() as u64)?;
        let mut done = 0usize;
        while done < buf.len() {
            let off = offset + done as u64;
            let (seg, area, pv_off, len) = self.locate(off, (buf.len() - done) as u64);
            let len = len as usize;
            self.segments[seg].areas[area]
                .0
                .read_at(pv_off, &mut buf[done..done + len])?;
            done += len;
        }
        Ok(())
    }

    fn map(&self, start: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(self.size, start, len)?;
        let mut list = ExtentList::new();
        let mut pos = start;
        while pos < start + len {
            let (seg, area, pv_off, n) = self.locate(pos, start + len - pos);
            for e in self.segments[seg].areas[area].0.map(pv_off, n)? {
                list.push(pos + (e.start - pv_off), e.len, e.kind, e.layer);
            }
            pos += n;
        }
        Ok(list.into_vec())
    }

    fn info(&self) -> ImageInfo {
        ImageInfo {
            path: self.name.clone(),
            format: "lvm".into(),
            virtual_size: self.size,
            ..ImageInfo::default()
        }
    }

    fn write_through(&self, offset: u64, data: &[u8]) -> Result<()> {
        check_range(self.size, offset, data.len() as u64)?;
        let mut done = 0usize;
        while done < data.len() {
            let off = offset + done as u64;
            let (seg, area, pv_off, len) = self.locate(off, (data.len() - done) as u64);
            let len = len as usize;
            self.segments[seg].areas[area]
                .0
                .write_through(pv_off, &data[done..done + len])?;
            done += len;
        }
        Ok(())
    }
}
