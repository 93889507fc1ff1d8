//! A read-only btrfs reader for single-device filesystems: superblock and
//! chunk bootstrap, B-tree walks, fs trees (inodes, directories, extents with
//! zlib/zstd/LZO compression), and subvolumes including the default one.
//!
//! A [`Btrfs`] handle shows one subvolume as its `/`; a directory entry that
//! names another subvolume is crossed transparently, as the kernel does.

mod chunk;
mod extent;
pub mod fuzz;
mod items;
mod lzo;
mod sb;
mod subvol;
mod tree;

use super::{DirEntry, FileType, Filesystem, FsKind, Metadata, Subvolume, MAX_DIR_ENTRIES, MAX_LINK_LEN};
use items::{ty, DirItem, Inode, RootItem};
use sb::Superblock;
use std::sync::Arc;
use tree::{Reader, TreeRoot};
use v2x_formats::block::BlockSource;
use v2x_formats::error::check_limit;
use v2x_formats::{Error, Result};

pub use tree::Key;

/// Id of the top-level subvolume (the FS_TREE).
pub const TOP_LEVEL: u64 = 5;
/// Smallest id of a created subvolume.
const FIRST_FREE: u64 = 256;
/// Largest id of a created subvolume.
const LAST_FREE: u64 = u64::MAX - 256;
/// Inode number the kernel shows for a subvolume placeholder in a snapshot.
const EMPTY_SUBVOL_DIR: u64 = 2;
/// Most path components one lookup may walk.
pub const MAX_PATH_COMPONENTS: usize = 4096;

/// What one open filesystem shares between its subvolume handles.
struct Volume {
    sb: Superblock,
    reader: Reader,
    root_tree: TreeRoot,
    default_subvol: u64,
}

/// One subvolume of a btrfs filesystem, seen as a [`Filesystem`].
pub struct Btrfs {
    vol: Arc<Volume>,
    subvol: u64,
    top: TreeRoot,
    root_dirid: u64,
}

/// An object reached by a path: an inode in one subvolume's tree, or the
/// empty placeholder a snapshot shows where a nested subvolume was.
#[derive(Debug, Clone, Copy)]
struct Obj {
    tree: TreeRoot,
    subvol: u64,
    ino: u64,
    placeholder: bool,
}

impl Btrfs {
    /// Opens the btrfs filesystem on `source`, showing its default subvolume.
    pub fn open(source: Arc<dyn BlockSource>) -> Result<Self> {
        let sb = Superblock::read(source.as_ref())?;
        if sb.num_devices != 1 {
            return Err(Error::unsupported(format!(
                "btrfs filesystem spans {} devices; only single-device filesystems are read",
                sb.num_devices
            )));
        }
        let size = source.size();
        let boot = chunk::parse_sys_array(&sb.sys_chunk_array, sb.devid, size)?;
        let mut reader = Reader::new(
            source,
            boot.clone(),
            sb.node_size,
            sb.metadata_uuid,
            sb.csum_verified,
        );
        let mut full = boot;
        let chunk_tree = TreeRoot {
            bytenr: sb.chunk_root,
            level: sb.chunk_root_level,
        };
        reader.walk(
            chunk_tree,
            Key::first(FIRST_FREE, chunk::CHUNK_ITEM_KEY),
            Key::last(FIRST_FREE, chunk::CHUNK_ITEM_KEY),
            &mut |it| {
                let (c, _) = chunk::parse_chunk(&it.key, it.data, sb.devid, size, it.at)?;
                full.insert(c, it.at)?;
                Ok(true)
            },
        )?;
        reader.set_chunks(full);
        let root_tree = TreeRoot {
            bytenr: sb.root,
            level: sb.root_level,
        };
        let mut vol = Volume {
            sb,
            reader,
            root_tree,
            default_subvol: TOP_LEVEL,
        };
        vol.default_subvol = vol.find_default()?;
        Self::open_id(Arc::new(vol), None)
    }

    /// A handle on subvolume `id` (the default one when `None`).
    fn open_id(vol: Arc<Volume>, id: Option<u64>) -> Result<Self> {
        let id = id.unwrap_or(vol.default_subvol);
        let root = vol
            .root_item(id)?
            .ok_or_else(|| Error::not_found(format!("btrfs subvolume id {id}")))?;
        Ok(Self {
            top: TreeRoot {
                bytenr: root.bytenr,
                level: root.level,
            },
            subvol: id,
            root_dirid: root.root_dirid,
            vol,
        })
    }

    /// The id of the subvolume this handle shows.
    pub fn subvol_id(&self) -> u64 {
        self.subvol
    }

    fn resolve(&self, path: &str) -> Result<Obj> {
        let mut cur = Obj {
            tree: self.top,
            subvol: self.subvol,
            ino: self.root_dirid,
            placeholder: false,
        };
        let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        check_limit(
            "btrfs path components",
            comps.len() as u64,
            MAX_PATH_COMPONENTS as u64,
        )?;
        for c in comps {
            if c == "." || c == ".." {
                return Err(Error::invalid(format!("{path} is not a physical path")));
            }
            if cur.placeholder {
                return Err(Error::not_found(path));
            }
            let entry = self
                .vol
                .lookup(cur, c.as_bytes())?
                .ok_or_else(|| Error::not_found(path))?;
            cur = self.vol.follow(cur, &entry)?;
        }
        Ok(cur)
    }

    fn inode(&self, obj: Obj, path: &str) -> Result<Inode> {
        self.vol.inode(obj)?.ok_or_else(|| {
            Error::corrupt(
                format!(
                    "btrfs inode {} of {path} is missing from subvolume {}",
                    obj.ino, obj.subvol
                ),
                self.vol.reader.phys(obj.tree.bytenr),
            )
        })
    }
}

impl Volume {
    fn root_item(&self, id: u64) -> Result<Option<RootItem>> {
        let hit = self.reader.first_in(
            self.root_tree,
            Key::first(id, ty::ROOT_ITEM),
            Key::last(id, ty::ROOT_ITEM),
        )?;
        hit.map(|(_, data, at)| RootItem::parse(&data, at)).transpose()
    }

    /// The default subvolume: the "default" entry of the root tree directory.
    fn find_default(&self) -> Result<u64> {
        let key = Key::new(
            self.sb.root_dir_objectid,
            ty::DIR_ITEM,
            items::name_hash(b"default"),
        );
        let Some((data, at)) = self.reader.find(self.root_tree, key)? else {
            return Ok(TOP_LEVEL);
        };
        let entry = items::parse_dir_items(&data, at)?
            .into_iter()
            .find(|d| d.name == b"default");
        match entry {
            Some(d)
                if d.location.objectid == TOP_LEVEL
                    || (FIRST_FREE..=LAST_FREE).contains(&d.location.objectid) =>
            {
                Ok(d.location.objectid)
            }
            Some(d) => Err(Error::corrupt(
                format!("btrfs default subvolume id {} is impossible", d.location.objectid),
                at,
            )),
            None => Ok(TOP_LEVEL),
        }
    }

    fn lookup(&self, dir: Obj, name: &[u8]) -> Result<Option<DirItem>> {
        let key = Key::new(dir.ino, ty::DIR_ITEM, items::name_hash(name));
        let Some((data, at)) = self.reader.find(dir.tree, key)? else {
            return Ok(None);
        };
        Ok(items::parse_dir_items(&data, at)?
            .into_iter()
            .find(|d| d.name == name))
    }

    /// The object a directory entry of `dir` points at, crossing into a subvolume if needed.
    fn follow(&self, dir: Obj, entry: &DirItem) -> Result<Obj> {
        match entry.location.ty {
            ty::INODE_ITEM => Ok(Obj {
                ino: entry.location.objectid,
                ..dir
            }),
            ty::ROOT_ITEM => {
                let id = entry.location.objectid;
                // A snapshot copies the entry but not the subvolume: the kernel
                // then shows an empty directory. Only a back reference from
                // the subvolume to this tree makes the entry live.
                let backref = self
                    .reader
                    .find(self.root_tree, Key::new(id, ty::ROOT_BACKREF, dir.subvol))?;
                let root = if backref.is_some() {
                    self.root_item(id)?
                } else {
                    None
                };
                Ok(match root {
                    Some(r) => Obj {
                        tree: TreeRoot {
                            bytenr: r.bytenr,
                            level: r.level,
                        },
                        subvol: id,
                        ino: r.root_dirid,
                        placeholder: false,
                    },
                    None => Obj {
                        ino: EMPTY_SUBVOL_DIR,
                        placeholder: true,
                        ..dir
                    },
                })
            }
            t => Err(Error::corrupt(
                format!("btrfs directory entry points at an item of type {t}"),
                self.reader.phys(dir.tree.bytenr),
            )),
        }
    }

    fn inode(&self, obj: Obj) -> Result<Option<Inode>> {
        if obj.placeholder {
            return Ok(Some(Inode {
                size: 0,
                nlink: 1,
                uid: 0,
                gid: 0,
                mode: 0o040755,
            }));
        }
        let hit = self.reader.find(obj.tree, Key::new(obj.ino, ty::INODE_ITEM, 0))?;
        hit.map(|(data, at)| Inode::parse(&data, at)).transpose()
    }
}

impl Filesystem for Btrfs {
    fn kind(&self) -> FsKind {
        FsKind::Btrfs
    }

    fn kind_name(&self) -> &'static str {
        "btrfs"
    }

    fn label(&self) -> Option<String> {
        Some(self.vol.sb.label.clone()).filter(|l| !l.is_empty())
    }

    fn uuid(&self) -> Option<String> {
        Some(self.vol.sb.uuid_string())
    }

    fn lstat(&self, path: &str) -> Result<Metadata> {
        let obj = self.resolve(path)?;
        let ino = self.inode(obj, path)?;
        Ok(Metadata {
            file_type: ino.file_type(),
            size: ino.size,
            mode: Some(ino.mode),
            uid: Some(ino.uid),
            gid: Some(ino.gid),
            ino: Some(obj.ino),
        })
    }

    fn read_dir(&self, path: &str) -> Result<Vec<DirEntry>> {
        let obj = self.resolve(path)?;
        if self.inode(obj, path)?.file_type() != FileType::Dir {
            return Err(Error::invalid(format!("{path} is not a directory")));
        }
        let mut out = Vec::new();
        if obj.placeholder {
            return Ok(out);
        }
        let lo = Key::first(obj.ino, ty::DIR_INDEX);
        let hi = Key::last(obj.ino, ty::DIR_INDEX);
        self.vol.reader.walk(obj.tree, lo, hi, &mut |it| {
            for d in items::parse_dir_items(it.data, it.at)? {
                if out.len() >= MAX_DIR_ENTRIES {
                    return Err(Error::LimitExceeded {
                        what: "btrfs directory entries",
                        value: out.len() as u64 + 1,
                        max: MAX_DIR_ENTRIES as u64,
                    });
                }
                out.push(DirEntry {
                    name: String::from_utf8_lossy(&d.name).into_owned(),
                    file_type: d.file_type(),
                });
            }
            Ok(true)
        })?;
        Ok(out)
    }

    fn read_range(&self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let obj = self.resolve(path)?;
        let ino = self.inode(obj, path)?;
        if ino.file_type() != FileType::File {
            return Err(Error::invalid(format!("{path} is not a regular file")));
        }
        let sector = self.vol.sb.sector_size;
        extent::read_range(&self.vol.reader, sector, obj.tree, obj.ino, ino.size, offset, len)
    }

    fn read_link(&self, path: &str) -> Result<String> {
        let obj = self.resolve(path)?;
        let ino = self.inode(obj, path)?;
        if ino.file_type() != FileType::Symlink {
            return Err(Error::invalid(format!("{path} is not a symlink")));
        }
        check_limit("btrfs symlink length", ino.size, MAX_LINK_LEN)?;
        let sector = self.vol.sb.sector_size;
        let raw = extent::read_range(&self.vol.reader, sector, obj.tree, obj.ino, ino.size, 0, ino.size)?;
        Ok(String::from_utf8_lossy(&raw).into_owned())
    }

    fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if !self.vol.sb.csum_verified {
            notes.push("btrfs checksums use xxhash/sha256/blake2, which v2x does not verify".to_string());
        }
        notes
    }

    fn subvolumes(&self) -> Vec<Subvolume> {
        subvol::list(&self.vol).unwrap_or_default()
    }

    fn open_subvolume(&self, path: &str) -> Result<Arc<dyn Filesystem>> {
        let want = path.trim_matches('/');
        let id = if want.is_empty() {
            TOP_LEVEL
        } else {
            subvol::list(&self.vol)?
                .into_iter()
                .find(|s| s.path == want)
                .map(|s| s.id)
                .ok_or_else(|| Error::not_found(format!("btrfs subvolume {path}")))?
        };
        Ok(Arc::new(Self::open_id(self.vol.clone(), Some(id))?))
    }
}
