//! The guest stages of `v2x convert`: over copy-on-write overlays of the
//! source disks, find the volumes and filesystems, inspect, choose the root,
//! compute the edit plan (what `--dry-run` prints) and apply it. The copy
//! stage then reads the overlays, so it stays one parallel pass and the
//! source is never written.

use super::apply::{self, Applied};
use super::linux;
use super::plan::EditPlan;
use crate::guest::inspect::{self, Disk, Inspection, RootReport, Storage};
use crate::guest::linux::InspectOptions;
use crate::overlay::Overlay;
use std::sync::Arc;
use v2x_formats::block::BlockSource;
use v2x_formats::{Error, Result};

/// Which root to convert when the disks hold more than one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootChoice {
    /// The best-ranked root (inspection's order).
    First,
    /// The root on this volume: "sda2", "/dev/sda2", "vg/root",
    /// "/dev/vg/root" or "/dev/mapper/vg-root".
    Device(String),
}

impl std::str::FromStr for RootChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "" => Err("empty root choice".into()),
            "first" => Ok(RootChoice::First),
            "ask" => Err("v2x never prompts: use --root first or --root DEVICE".into()),
            d => Ok(RootChoice::Device(d.to_string())),
        }
    }
}

/// A prepared conversion: the overlays, what inspection found, the chosen
/// root and its plan.
pub struct Prepared {
    /// One overlay per input disk; the copy reads these.
    pub overlays: Vec<Arc<Overlay>>,
    /// Disks, volumes and filesystems, opened over the overlays.
    pub storage: Storage,
    /// The full inspection.
    pub inspection: Inspection,
    /// The root that is converted, if any.
    pub root: Option<RootReport>,
    /// The edits, empty when there is nothing to convert.
    pub plan: EditPlan,
    /// Things the user should know (other roots, unconverted OS types).
    pub notes: Vec<String>,
}

/// Opens overlays over `disks`, inspects them and plans the conversion.
pub fn prepare(disks: Vec<Disk>, choice: &RootChoice) -> Result<Prepared> {
    let mut overlays = Vec::with_capacity(disks.len());
    let mut over_disks = Vec::with_capacity(disks.len());
    for d in disks {
        let ov = Arc::new(Overlay::new(d.source));
        overlays.push(ov.clone());
        over_disks.push(Disk {
            path: d.path,
            format: d.format,
            source: ov as Arc<dyn BlockSource>,
        });
    }
    let storage = Storage::open(over_disks)?;
    let inspection = inspect::inspect_storage(&storage)?;
    let mut notes = Vec::new();
    let root = choose_root(&storage, &inspection, choice, &mut notes)?;
    let plan = match &root {
        None => {
            notes.push("no operating system found: the disks are copied without guest changes".into());
            EditPlan::default()
        }
        Some(r) if r.os_type == "linux" => {
            let tree = inspect::root_tree(&storage, r)?;
            let info = crate::guest::linux::inspect_with(
                &tree,
                InspectOptions {
                    read_initramfs: false,
                },
            )?;
            let kernels = linux::kernel_refs(&tree, &info.kernels)?;
            linux::plan(&storage, &tree, &info, &kernels, &r.firmware)?
        }
        Some(r) => {
            notes.push(format!(
                "the {} root on {} is copied without guest changes: v2x does not convert {} guests yet",
                r.os_type, r.volume, r.os_type
            ));
            EditPlan::default()
        }
    };
    Ok(Prepared {
        overlays,
        storage,
        inspection,
        root,
        plan,
        notes,
    })
}

/// Applies the plan of `p` to its overlays.
pub fn apply(p: &Prepared) -> Result<Applied> {
    let Some(root) = &p.root else {
        return Ok(Applied::default());
    };
    if p.plan.edit_count() == 0 {
        return Ok(Applied::default());
    }
    let tree = inspect::root_tree(&p.storage, root)?;
    apply::apply(&p.plan, &p.storage, &tree)
}

fn choose_root(
    storage: &Storage,
    inspection: &Inspection,
    choice: &RootChoice,
    notes: &mut Vec<String>,
) -> Result<Option<RootReport>> {
    let roots = &inspection.roots;
    let describe = |r: &RootReport| {
        let name = r
            .product_name
            .clone()
            .or(r.distro.clone())
            .unwrap_or_else(|| r.os_type.clone());
        match &r.subvolume {
            Some(s) => format!("{} ({name}, subvolume {s})", r.volume),
            None => format!("{} ({name})", r.volume),
        }
    };
    match choice {
        RootChoice::First => {
            let Some(first) = roots.first() else {
                return Ok(None);
            };
            if roots.len() > 1 {
                let others: Vec<String> = roots[1..].iter().map(describe).collect();
                notes.push(format!(
                    "{} roots found; converting {} (choose another with --root): also {}",
                    roots.len(),
                    describe(first),
                    others.join(", ")
                ));
            }
            Ok(Some(first.clone()))
        }
        RootChoice::Device(dev) => {
            let want = dev.trim_end_matches('/');
            let matches_dev = |r: &&RootReport| {
                storage.volumes.volumes.iter().any(|v| {
                    v.name == r.volume && (v.name == want || v.linux_paths().iter().any(|p| p == want))
                })
            };
            match roots.iter().find(matches_dev) {
                Some(r) => Ok(Some(r.clone())),
                None => {
                    let all: Vec<String> = roots.iter().map(describe).collect();
                    Err(Error::not_found(format!(
                        "--root {dev}: no operating system root on that volume (roots found: {})",
                        if all.is_empty() {
                            "none".to_string()
                        } else {
                            all.join(", ")
                        }
                    )))
                }
            }
        }
    }
}
