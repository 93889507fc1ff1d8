//! Subvolume listing: ROOT_ITEMs give the subvolumes and their flags,
//! ROOT_BACKREFs say where each one is linked, and INODE_REFs in the parent
//! tree give the directory path down to that link.

use super::items::{self, ty, NameRef, RootItem};
use super::tree::{Key, TreeRoot};
use super::{Volume, FIRST_FREE, LAST_FREE, TOP_LEVEL};
use crate::fs::Subvolume;
use std::collections::BTreeMap;
use v2x_formats::{Error, Result};

/// Most subvolumes (and snapshots) one filesystem may list.
pub const MAX_SUBVOLUMES: usize = 65536;
/// Deepest nesting of subvolumes inside subvolumes.
pub const MAX_SUBVOL_NESTING: usize = 64;
/// Deepest directory path from a subvolume's top to a nested subvolume.
pub const MAX_DIR_DEPTH: usize = 1024;

struct Found {
    root: RootItem,
    parent: Option<(u64, NameRef)>,
}

/// Every subvolume (ids 256 and up) linked into the filesystem, sorted by id.
pub(super) fn list(vol: &Volume) -> Result<Vec<Subvolume>> {
    let mut found: BTreeMap<u64, Found> = BTreeMap::new();
    let lo = Key::first(FIRST_FREE, 0);
    let hi = Key::new(LAST_FREE, u8::MAX, u64::MAX);
    vol.reader.walk(vol.root_tree, lo, hi, &mut |it| {
        match it.key.ty {
            ty::ROOT_ITEM => {
                if found.len() >= MAX_SUBVOLUMES {
                    return Err(Error::LimitExceeded {
                        what: "btrfs subvolumes",
                        value: found.len() as u64 + 1,
                        max: MAX_SUBVOLUMES as u64,
                    });
                }
                let root = RootItem::parse(it.data, it.at)?;
                found.insert(it.key.objectid, Found { root, parent: None });
            }
            ty::ROOT_BACKREF => {
                let r = items::parse_root_ref(it.data, it.at)?;
                if let Some(f) = found.get_mut(&it.key.objectid) {
                    f.parent = Some((it.key.offset, r));
                }
            }
            _ => {}
        }
        Ok(true)
    })?;
    let mut paths: BTreeMap<u64, String> = BTreeMap::new();
    let mut out = Vec::new();
    for (&id, f) in &found {
        let Some(path) = path_of(vol, &found, &mut paths, id, 0)? else {
            continue;
        };
        out.push(Subvolume {
            id,
            path,
            is_default: id == vol.default_subvol,
            read_only: f.root.read_only(),
        });
    }
    Ok(out)
}

/// The path of subvolume `id` from the top level, or `None` when it is not
/// linked anywhere (deleted, or orphaned).
fn path_of(
    vol: &Volume,
    found: &BTreeMap<u64, Found>,
    memo: &mut BTreeMap<u64, String>,
    id: u64,
    depth: usize,
) -> Result<Option<String>> {
    if id == TOP_LEVEL {
        return Ok(Some(String::new()));
    }
    if let Some(p) = memo.get(&id) {
        return Ok(Some(p.clone()));
    }
    if depth >= MAX_SUBVOL_NESTING {
        return Err(Error::LimitExceeded {
            what: "btrfs subvolume nesting",
            value: depth as u64 + 1,
            max: MAX_SUBVOL_NESTING as u64,
        });
    }
    let Some((parent, link)) = found.get(&id).and_then(|f| f.parent.as_ref()) else {
        return Ok(None);
    };
    let Some(mut path) = path_of(vol, found, memo, *parent, depth + 1)? else {
        return Ok(None);
    };
    let parent_root = if *parent == TOP_LEVEL {
        vol.root_item(TOP_LEVEL)?
    } else {
        found.get(parent).map(|f| f.root)
    };
    let Some(parent_root) = parent_root else {
        return Ok(None);
    };
    let tree = TreeRoot {
        bytenr: parent_root.bytenr,
        level: parent_root.level,
    };
    for comp in dir_path(vol, tree, parent_root.root_dirid, link.dirid)? {
        push(&mut path, &comp);
    }
    push(&mut path, &String::from_utf8_lossy(&link.name));
    memo.insert(id, path.clone());
    Ok(Some(path))
}

fn push(path: &mut String, comp: &str) {
    if !path.is_empty() {
        path.push('/');
    }
    path.push_str(comp);
}

/// Names from directory `top` down to directory `dir` in one tree, by
/// following INODE_REFs upwards.
fn dir_path(vol: &Volume, tree: TreeRoot, top: u64, dir: u64) -> Result<Vec<String>> {
    let mut names = Vec::new();
    let mut cur = dir;
    while cur != top {
        if names.len() >= MAX_DIR_DEPTH {
            return Err(Error::LimitExceeded {
                what: "btrfs directory depth above a subvolume",
                value: names.len() as u64 + 1,
                max: MAX_DIR_DEPTH as u64,
            });
        }
        let hit = vol.reader.first_in(
            tree,
            Key::first(cur, ty::INODE_REF),
            Key::last(cur, ty::INODE_REF),
        )?;
        let Some((key, data, at)) = hit else {
            return Err(Error::corrupt(
                format!("btrfs directory {cur} above a subvolume has no parent reference"),
                vol.reader.phys(tree.bytenr),
            ));
        };
        let r = items::parse_inode_ref(&data, key.offset, at)?;
        names.push(String::from_utf8_lossy(&r.name).into_owned());
        if r.dirid == cur {
            return Err(Error::corrupt(
                format!("btrfs directory {cur} is its own parent"),
                at,
            ));
        }
        cur = r.dirid;
    }
    names.reverse();
    Ok(names)
}
