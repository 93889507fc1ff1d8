//! Carries out an [`EditPlan`] on the guest's filesystems, through the
//! copy-on-write overlay: every volume the plan touches is opened for
//! writing as a [`VolumeDevice`], so edits land in the overlay and the
//! source image is never written.
//!
//! Everything that can refuse does so before the first write: each touched
//! mount must be ext2/3/4 (passing [`Ext4Writer::open`]'s feature checks) or
//! FAT (only file writes and directories there), and every edited path must
//! resolve, directly or inside a directory an earlier edit creates.

use super::plan::{Edit, EditPlan};
use crate::fs::ext4w::{Ext4Writer, VolumeDevice};
use crate::fs::fat::FatWriter;
use crate::fs::guest::GuestRoot;
use crate::fs::FsKind;
use crate::guest::inspect::Storage;
use std::collections::BTreeMap;
use v2x_formats::{Error, Result};

/// Owner of everything conversion creates (root).
const OWNER: (u32, u32) = (0, 0);

/// Seconds since the epoch stamped on what conversion writes:
/// `SOURCE_DATE_EPOCH` when set (reproducible builds), else now.
pub fn timestamp() -> i64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        })
}

/// What was applied, per step.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// (step id, edits applied) in plan order.
    pub steps: Vec<(String, usize)>,
}

/// One edit with its place in the guest: the mount, the path inside that
/// filesystem, and for new entries the parent directory and name.
struct Target<'a> {
    edit: &'a Edit,
    mount: usize,
    fs_path: String,
    parent: String,
    name: String,
}

/// Applies `plan` to the filesystems of `tree`, whose volumes live in `storage`
/// (opened over overlays). Returns what was done.
pub fn apply(plan: &EditPlan, storage: &Storage, tree: &GuestRoot) -> Result<Applied> {
    // 1. Resolve every edit to its mount and filesystem path.
    let mut targets: Vec<Target> = Vec::new();
    // Directories the plan creates: guest path -> (mount, path in that filesystem).
    let mut planned_dirs: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for step in &plan.steps {
        for edit in &step.edits {
            let existing = matches!(edit, Edit::Append { .. } | Edit::Remove { .. })
                || matches!(edit, Edit::WriteFile { old: Some(_), .. });
            let (mount, fs_path, name) = if existing {
                let follow = !matches!(edit, Edit::Remove { .. });
                let r = tree.resolve(edit.path(), follow)?;
                let name = r.fs_path.rsplit('/').next().unwrap_or_default().to_string();
                (r.mount, r.fs_path, name)
            } else {
                let (guest_parent, name) = edit.path().rsplit_once('/').unwrap_or(("", edit.path()));
                match planned_dirs.get(guest_parent) {
                    // Inside a directory an earlier edit creates.
                    Some((m, p)) => (
                        *m,
                        format!("{}/{name}", p.trim_end_matches('/')),
                        name.to_string(),
                    ),
                    None => {
                        let (r, name) = tree.resolve_new(edit.path())?;
                        (r.mount, r.fs_path, name)
                    }
                }
            };
            if matches!(edit, Edit::Mkdir { .. }) {
                planned_dirs.insert(edit.path().to_string(), (mount, fs_path.clone()));
            }
            let parent = match fs_path.rsplit_once('/') {
                Some(("", _)) | None => "/".to_string(),
                Some((p, _)) => p.to_string(),
            };
            targets.push(Target {
                edit,
                mount,
                fs_path,
                parent,
                name,
            });
        }
    }

    // 2. Open a writer for each touched mount; any refusal comes before writing.
    let mut writers: BTreeMap<usize, Writer> = BTreeMap::new();
    for t in &targets {
        if writers.contains_key(&t.mount) {
            continue;
        }
        let m = &tree.mounts()[t.mount];
        let vol = storage
            .volumes
            .volumes
            .iter()
            .find(|v| v.name == m.volume)
            .ok_or_else(|| Error::not_found(format!("volume {} of mount {}", m.volume, m.at)))?;
        let ctx = format!("{} on {}", m.at, m.volume);
        let w = match m.fs.kind() {
            FsKind::Ext => {
                let mut w = Ext4Writer::open(Box::new(VolumeDevice(vol.source.clone())))
                    .map_err(|e| e.context_msg(&ctx))?;
                w.set_time(timestamp());
                Writer::Ext(Box::new(w))
            }
            FsKind::Fat => Writer::Fat(FatWriter::open(vol.source.clone()).map_err(|e| e.context_msg(&ctx))?),
            _ => {
                return Err(Error::unsupported(format!(
                    "{} ({} on {}) would need an edit of {}, and v2x writes only ext2/3/4 and FAT",
                    m.at,
                    m.fs.kind_name(),
                    m.volume,
                    t.edit.path()
                )))
            }
        };
        if let (Writer::Fat(_), e) = (&w, t.edit) {
            if !matches!(e, Edit::WriteFile { .. } | Edit::Mkdir { .. }) {
                return Err(Error::unsupported(format!(
                    "{}: on FAT v2x only writes files and makes directories",
                    e.path()
                )));
            }
        }
        writers.insert(t.mount, w);
    }

    // 3. Apply, in plan order.
    let mut applied = Applied::default();
    let mut i = 0;
    for step in &plan.steps {
        for _ in &step.edits {
            let t = &targets[i];
            i += 1;
            let ctx = format!("{} {}", step.id, t.edit.path());
            match writers.get_mut(&t.mount).expect("writer opened above") {
                Writer::Ext(w) => apply_one(w, t),
                Writer::Fat(w) => apply_fat(w, t),
            }
            .map_err(|e| e.context_msg(&ctx))?;
        }
        applied.steps.push((step.id.clone(), step.edits.len()));
    }
    Ok(applied)
}

/// The writer of one mounted filesystem.
enum Writer {
    Ext(Box<Ext4Writer>),
    Fat(FatWriter),
}

fn apply_fat(w: &FatWriter, t: &Target) -> Result<()> {
    match t.edit {
        Edit::WriteFile { new, .. } => w.write_file(&t.fs_path, new),
        Edit::Mkdir { .. } => w.mkdir(&t.fs_path),
        e => Err(Error::unsupported(format!("{}: not a FAT operation", e.path()))),
    }
}

fn apply_one(w: &mut Ext4Writer, t: &Target) -> Result<()> {
    let (uid, gid) = OWNER;
    match t.edit {
        Edit::WriteFile {
            old: Some(_), new, ..
        } => w.write_file(&t.fs_path, new),
        Edit::WriteFile {
            old: None, new, mode, ..
        } => {
            match w.lookup(&t.fs_path) {
                // Created by an earlier step or already present: replace its content.
                Ok(_) => w.write_file(&t.fs_path, new),
                Err(Error::NotFound(_)) => w
                    .create_file(&t.parent, &t.name, (*mode & 0o7777) as u16, uid, gid, new)
                    .map(|_| ()),
                Err(e) => Err(e),
            }
        }
        Edit::Append { data, .. } => {
            let ino = w.lookup(&t.fs_path)?;
            let mut content = w.read_file(ino)?;
            content.extend_from_slice(data);
            w.write_file(&t.fs_path, &content)
        }
        Edit::Remove { .. } => match w.lookup(&t.fs_path) {
            Ok(_) => w.unlink(&t.fs_path),
            // Removed by an earlier edit of the same plan (two links to one unit).
            Err(Error::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        },
        Edit::Symlink { target, .. } => w.symlink(&t.parent, &t.name, target, uid, gid).map(|_| ()),
        Edit::Mkdir { .. } => match w.lookup(&t.fs_path) {
            Ok(_) => Ok(()),
            Err(Error::NotFound(_)) => w.mkdir(&t.parent, &t.name, 0o755, uid, gid).map(|_| ()),
            Err(e) => Err(e),
        },
    }
}
