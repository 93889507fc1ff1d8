//! The volume-group model built from parsed text metadata: PVs with their
//! extent areas, LVs with linear and striped segments. Everything read here
//! is checked before the assembly step turns it into byte offsets.

use super::text::{self, Section, Value};
use v2x_formats::error::check_limit;
use v2x_formats::{Error, Result};

/// Most PVs in one VG.
pub const MAX_PVS: u64 = 1024;
/// Most LVs in one VG.
pub const MAX_LVS: u64 = 4096;
/// Most segments in one LV.
pub const MAX_SEGMENTS: u64 = 4096;
/// Most stripes in one segment.
pub const MAX_STRIPES: u64 = 128;

/// A volume group as its metadata describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Vg {
    /// VG name.
    pub name: String,
    /// VG UUID.
    pub id: String,
    /// Metadata sequence number: the highest copy wins.
    pub seqno: u64,
    /// Extent size in 512-byte sectors.
    pub extent_size: u64,
    /// Physical volumes, in metadata order.
    pub pvs: Vec<PvMeta>,
    /// Logical volumes, in metadata order.
    pub lvs: Vec<LvMeta>,
}

/// A PV as the VG metadata lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvMeta {
    /// Its key in the metadata ("pv0"), used by segments.
    pub key: String,
    /// PV UUID, matched against the labels found on disks.
    pub id: String,
    /// Device hint recorded at the last change (informational).
    pub device: Option<String>,
    /// First extent's offset, in 512-byte sectors.
    pub pe_start: u64,
    /// Number of extents.
    pub pe_count: u64,
}

/// A logical volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvMeta {
    /// LV name.
    pub name: String,
    /// LV UUID.
    pub id: String,
    /// False for LVM's internal LVs (thin pool data, mirror images, ...).
    pub visible: bool,
    /// Segments by start extent, contiguous from 0. Empty when `unsupported`.
    pub segments: Vec<Segment>,
    /// The first segment type v2x cannot map (thin, raid1, snapshot...).
    pub unsupported: Option<String>,
}

/// A linear (one stripe) or striped segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// First LV extent.
    pub start_extent: u64,
    /// Extents, over all stripes.
    pub extent_count: u64,
    /// Stripe size in 512-byte sectors (0 for linear).
    pub stripe_size: u64,
    /// Per stripe: index into [`Vg::pvs`] and first PV extent.
    pub stripes: Vec<(usize, u64)>,
}

impl LvMeta {
    /// Length in extents.
    pub fn extents(&self) -> u64 {
        self.segments
            .last()
            .map_or(0, |s| s.start_extent + s.extent_count)
    }
}

/// Parses a metadata text (at byte `base` on its PV) into a VG.
pub fn parse_vg(text: &[u8], base: u64) -> Result<Vg> {
    let root = text::parse(text, base)?;
    vg_from(&root, base)
}

/// Builds a VG from the parsed metadata: the first top-level section is the VG.
pub fn vg_from(root: &Section, base: u64) -> Result<Vg> {
    let bad = |what: String| Error::corrupt(format!("LVM metadata: {what}"), base);
    let (name, s) = root
        .sections()
        .next()
        .ok_or_else(|| bad("no volume group section".into()))?;
    let vg_field = |key: &str| bad(format!("VG {name}: {key} is missing or not a number"));
    let extent_size = uint(s, "extent_size").ok_or_else(|| vg_field("extent_size"))?;
    if extent_size == 0 || extent_size > 1 << 32 {
        return Err(bad(format!(
            "VG {name}: extent_size {extent_size} is out of range"
        )));
    }
    let mut vg = Vg {
        name: name.to_string(),
        id: s.str("id").unwrap_or_default().to_string(),
        seqno: uint(s, "seqno").ok_or_else(|| vg_field("seqno"))?,
        extent_size,
        pvs: Vec::new(),
        lvs: Vec::new(),
    };
    if let Some(pvs) = s.section("physical_volumes") {
        for (key, p) in pvs.sections() {
            check_limit("LVM physical volumes", vg.pvs.len() as u64 + 1, MAX_PVS)?;
            let field = |f: &str| bad(format!("PV {key}: {f} is missing or not a number"));
            vg.pvs.push(PvMeta {
                key: key.to_string(),
                id: p
                    .str("id")
                    .ok_or_else(|| bad(format!("PV {key}: id is missing")))?
                    .to_string(),
                device: p.str("device").map(str::to_string),
                pe_start: uint(p, "pe_start").ok_or_else(|| field("pe_start"))?,
                pe_count: uint(p, "pe_count").ok_or_else(|| field("pe_count"))?,
            });
        }
    }
    if let Some(lvs) = s.section("logical_volumes") {
        for (lv_name, l) in lvs.sections() {
            check_limit("LVM logical volumes", vg.lvs.len() as u64 + 1, MAX_LVS)?;
            vg.lvs.push(lv_from(&vg, lv_name, l, base)?);
        }
    }
    Ok(vg)
}

fn lv_from(vg: &Vg, name: &str, l: &Section, base: u64) -> Result<LvMeta> {
    let bad = |what: String| Error::corrupt(format!("LVM metadata: LV {}/{name}: {what}", vg.name), base);
    let visible = l
        .array("status")
        .is_some_and(|a| a.iter().any(|v| *v == Value::Str("VISIBLE".into())));
    let mut lv = LvMeta {
        name: name.to_string(),
        id: l.str("id").unwrap_or_default().to_string(),
        visible,
        segments: Vec::new(),
        unsupported: None,
    };
    for (key, seg) in l.sections() {
        if !key.starts_with("segment") {
            continue;
        }
        check_limit("LVM segments", lv.segments.len() as u64 + 1, MAX_SEGMENTS)?;
        let field = |f: &str| bad(format!("{key}: {f} is missing or not a number"));
        let start_extent = uint(seg, "start_extent").ok_or_else(|| field("start_extent"))?;
        let extent_count = uint(seg, "extent_count").ok_or_else(|| field("extent_count"))?;
        let kind = seg
            .str("type")
            .ok_or_else(|| bad(format!("{key}: type is missing")))?;
        if kind != "striped" {
            lv.unsupported = Some(kind.to_string());
            lv.segments.clear();
            return Ok(lv);
        }
        let count = uint(seg, "stripe_count").ok_or_else(|| field("stripe_count"))?;
        if count == 0 {
            return Err(bad(format!("{key}: stripe_count is 0")));
        }
        check_limit("LVM stripes", count, MAX_STRIPES)?;
        let stripe_size = if count > 1 {
            let ss = uint(seg, "stripe_size").ok_or_else(|| field("stripe_size"))?;
            if ss == 0 || vg.extent_size % ss != 0 {
                return Err(bad(format!(
                    "{key}: stripe_size {ss} does not divide extent_size {}",
                    vg.extent_size
                )));
            }
            ss
        } else {
            0
        };
        if extent_count == 0 || extent_count % count != 0 {
            return Err(bad(format!(
                "{key}: {extent_count} extents cannot split into {count} stripes"
            )));
        }
        let list = seg
            .array("stripes")
            .ok_or_else(|| bad(format!("{key}: stripes is missing")))?;
        if list.len() as u64 != 2 * count {
            return Err(bad(format!(
                "{key}: stripes lists {} items for {count} stripes",
                list.len()
            )));
        }
        let mut stripes = Vec::new();
        for pair in list.chunks(2) {
            let (Value::Str(pv), Value::Int(pe)) = (&pair[0], &pair[1]) else {
                return Err(bad(format!("{key}: stripes must pair a PV name with an extent")));
            };
            let idx = vg
                .pvs
                .iter()
                .position(|p| p.key == *pv)
                .ok_or_else(|| bad(format!("{key}: unknown PV {pv:?}")))?;
            let pe = u64::try_from(*pe).map_err(|_| bad(format!("{key}: negative extent {pe}")))?;
            let per_stripe = extent_count / count;
            if pe
                .checked_add(per_stripe)
                .is_none_or(|end| end > vg.pvs[idx].pe_count)
            {
                return Err(bad(format!(
                    "{key}: extents {pe}+{per_stripe} lie past the {} extents of {pv}",
                    vg.pvs[idx].pe_count
                )));
            }
            stripes.push((idx, pe));
        }
        lv.segments.push(Segment {
            start_extent,
            extent_count,
            stripe_size,
            stripes,
        });
    }
    lv.segments.sort_by_key(|s| s.start_extent);
    let mut next = 0u64;
    for s in &lv.segments {
        if s.start_extent != next {
            return Err(bad(format!(
                "segments are not contiguous: one starts at extent {}, expected {next}",
                s.start_extent
            )));
        }
        next = next
            .checked_add(s.extent_count)
            .ok_or_else(|| bad("extent count overflows".into()))?;
    }
    Ok(lv)
}

/// A non-negative integer field.
fn uint(s: &Section, key: &str) -> Option<u64> {
    s.int(key).and_then(|i| u64::try_from(i).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const META: &str = r#"vg {
  id = "vgid" seqno = 3 extent_size = 8
  physical_volumes {
    pv0 { id = "a" pe_start = 2048 pe_count = 10 }
    pv1 { id = "b" pe_start = 2048 pe_count = 10 }
  }
  logical_volumes {
    s { id = "sid" status = ["READ", "VISIBLE"]
        segment1 { start_extent = 0 extent_count = 4 type = "striped" stripe_count = 2 stripe_size = 4
                   stripes = ["pv0", 0, "pv1", 1] } }
    t { status = ["READ", "VISIBLE"] segment1 { start_extent = 0 extent_count = 4 type = "thin" } }
  }
}
"#;

    #[test]
    fn builds_striped_and_notes_unsupported() {
        let vg = parse_vg(META.as_bytes(), 0).unwrap();
        assert_eq!((vg.name.as_str(), vg.seqno, vg.extent_size), ("vg", 3, 8));
        assert_eq!(vg.lvs[0].segments[0].stripes, vec![(0, 0), (1, 1)]);
        assert!(vg.lvs[0].visible);
        assert_eq!(vg.lvs[1].unsupported.as_deref(), Some("thin"));
    }

    #[test]
    fn bad_models_are_corrupt() {
        for (from, to) in [
            ("\"pv1\", 1]", "\"pv9\", 1]"),
            ("\"pv1\", 1]", "\"pv1\", 9]"),
            ("stripe_size = 4", "stripe_size = 3"),
            (
                "extent_count = 4 type = \"striped\"",
                "extent_count = 3 type = \"striped\"",
            ),
            (
                "start_extent = 0 extent_count = 4 type = \"striped\"",
                "start_extent = 1 extent_count = 4 type = \"striped\"",
            ),
            ("extent_size = 8", "extent_size = 0"),
            ("seqno = 3", "seqno = \"x\""),
        ] {
            let m = META.replace(from, to);
            assert_ne!(m, META);
            assert!(
                matches!(parse_vg(m.as_bytes(), 0), Err(Error::Corrupt { .. })),
                "{to}"
            );
        }
        let m = META.replace("stripe_count = 2", "stripe_count = 200");
        assert!(matches!(
            parse_vg(m.as_bytes(), 0),
            Err(Error::LimitExceeded { .. })
        ));
    }

    #[test]
    fn counts_are_capped() {
        let pvs: String = (0..=MAX_PVS)
            .map(|i| format!("pv{i} {{ id = \"{i}\" pe_start = 0 pe_count = 1 }}\n"))
            .collect();
        let m = format!("vg {{ seqno = 1 extent_size = 8 physical_volumes {{ {pvs} }} }}");
        assert!(matches!(
            parse_vg(m.as_bytes(), 0),
            Err(Error::LimitExceeded {
                what: "LVM physical volumes",
                ..
            })
        ));
        let lvs: String = (0..=MAX_LVS).map(|i| format!("lv{i} {{ }}\n")).collect();
        let m = format!("vg {{ seqno = 1 extent_size = 8 logical_volumes {{ {lvs} }} }}");
        assert!(matches!(
            parse_vg(m.as_bytes(), 0),
            Err(Error::LimitExceeded {
                what: "LVM logical volumes",
                ..
            })
        ));
        let segs: String = (0..=MAX_SEGMENTS)
            .map(|i| {
                format!(
                    "segment{i} {{ start_extent = {i} extent_count = 1 type = \"striped\" \
                     stripe_count = 1 stripes = [\"pv0\", 0] }}\n"
                )
            })
            .collect();
        let m = format!(
            "vg {{ seqno = 1 extent_size = 8 physical_volumes {{ pv0 {{ id = \"a\" pe_start = 0 pe_count = 1 }} }} \
             logical_volumes {{ lv {{ {segs} }} }} }}"
        );
        assert!(matches!(
            parse_vg(m.as_bytes(), 0),
            Err(Error::LimitExceeded {
                what: "LVM segments",
                ..
            })
        ));
    }
}
