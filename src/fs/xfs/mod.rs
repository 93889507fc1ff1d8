//! XFS (v4 and v5), read-only: superblock, inodes, extent and btree data
//! forks, directories in all four forms, files and symlinks.
//!
//! Everything read from the volume is checked against the geometry and the
//! `MAX_*` caps before it sizes an allocation or bounds a loop.

mod bmap;
mod dir;
#[doc(hidden)]
pub mod fuzz;
mod inode;
mod sb;
#[cfg(test)]
mod tests;

pub use bmap::{MAX_BTREE_BLOCKS, MAX_BTREE_DEPTH, MAX_EXTENTS};
pub use dir::MAX_DIR_BLOCKS;

use super::{DirEntry, FileType, Filesystem, FsKind, Metadata, MAX_LINK_LEN};
use dir::RawEntry;
use inode::{file_type_of_mode, ForkFormat, Inode};
use sb::{be32, Superblock};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use v2x_formats::block::BlockSource;
use v2x_formats::error::check_limit;
use v2x_formats::{Error, Result};

/// Longest symlink target XFS stores.
const SYMLINK_MAXLEN: u64 = 1024;
/// v5 remote symlink block magic "XSLM".
const SYMLINK_MAGIC: u32 = 0x5853_4c4d;
/// v5 remote symlink block header size.
const SYMLINK_HDR: usize = 56;
/// Most directory entries kept in the listing cache before it is emptied.
pub const MAX_CACHED_DIR_ENTRIES: usize = 1 << 20;

/// A directory listing with a name index, as cached.
struct Listing {
    entries: Vec<RawEntry>,
    by_name: HashMap<Vec<u8>, usize>,
}

/// Listings of recently used directories, by inode number.
#[derive(Default)]
struct DirCache {
    dirs: HashMap<u64, Arc<Listing>>,
    entries: usize,
}

/// An XFS filesystem opened read-only.
pub struct Xfs {
    src: Arc<dyn BlockSource>,
    sb: Superblock,
    cache: Mutex<DirCache>,
}

/// Reads `buf.len()` bytes at volume offset `off`; a range past the end of
/// the volume is corruption of whatever pointed there.
pub(super) fn read_disk(src: &dyn BlockSource, off: u64, buf: &mut [u8]) -> Result<()> {
    match off.checked_add(buf.len() as u64) {
        Some(end) if end <= src.size() => src.read_at(off, buf),
        _ => Err(Error::corrupt(
            format!(
                "XFS structure of {} bytes lies past the end of the volume",
                buf.len()
            ),
            off,
        )),
    }
}

impl Xfs {
    /// Opens the XFS filesystem whose superblock is at byte 0 of `src`.
    pub fn open(src: Arc<dyn BlockSource>) -> Result<Self> {
        let mut b = vec![0u8; Superblock::SIZE];
        read_disk(src.as_ref(), 0, &mut b)?;
        let sb = Superblock::parse(&b)?;
        let fs = Xfs {
            src,
            sb,
            cache: Mutex::new(DirCache::default()),
        };
        let root = fs.inode(fs.sb.root_ino)?;
        if root.file_type() != FileType::Dir {
            return Err(Error::corrupt("XFS root inode is not a directory", root.offset));
        }
        Ok(fs)
    }

    /// Reads and checks inode `ino`.
    fn inode(&self, ino: u64) -> Result<Inode> {
        let off = self.sb.inode_offset(ino)?;
        let mut raw = vec![0u8; usize::from(self.sb.inode_size)];
        read_disk(self.src.as_ref(), off, &mut raw)?;
        Inode::parse(&self.sb, ino, off, &raw)
    }

    /// The listing of directory `dir`, from the cache or the disk.
    fn listing(&self, dir: &Inode) -> Result<Arc<Listing>> {
        if let Some(l) = self.cache.lock().map_err(|_| poisoned())?.dirs.get(&dir.ino) {
            return Ok(l.clone());
        }
        let entries = dir::read_dir(self.src.as_ref(), &self.sb, dir)?;
        let by_name = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.name.clone(), i))
            .collect();
        let listing = Arc::new(Listing { entries, by_name });
        let mut cache = self.cache.lock().map_err(|_| poisoned())?;
        if cache.entries + listing.entries.len() > MAX_CACHED_DIR_ENTRIES {
            cache.dirs.clear();
            cache.entries = 0;
        }
        cache.entries += listing.entries.len();
        cache.dirs.insert(dir.ino, listing.clone());
        Ok(listing)
    }

    /// The inode at a physical path (the last component is not followed).
    fn lookup(&self, path: &str) -> Result<Inode> {
        if !path.starts_with('/') {
            return Err(Error::invalid(format!("XFS path {path} is not absolute")));
        }
        let mut cur = self.inode(self.sb.root_ino)?;
        for comp in path.split('/').filter(|c| !c.is_empty()) {
            if cur.file_type() != FileType::Dir {
                return Err(Error::not_found(format!(
                    "{path}: a component is not a directory"
                )));
            }
            let listing = self.listing(&cur)?;
            let Some(&i) = listing.by_name.get(comp.as_bytes()) else {
                return Err(Error::not_found(path.to_string()));
            };
            cur = self.inode(listing.entries[i].ino)?;
        }
        Ok(cur)
    }

    fn read_link_inode(&self, ino: &Inode) -> Result<Vec<u8>> {
        let len = ino.size;
        if len == 0 || len > SYMLINK_MAXLEN || len > MAX_LINK_LEN {
            return Err(Error::corrupt(
                format!("XFS symlink inode {} has a {len}-byte target", ino.ino),
                ino.offset + 56,
            ));
        }
        let len = len as usize;
        match ino.format {
            ForkFormat::Local => ino.fork.get(..len).map(<[u8]>::to_vec).ok_or_else(|| {
                Error::corrupt(
                    format!("XFS symlink inode {}: target longer than the inode", ino.ino),
                    ino.offset + 56,
                )
            }),
            ForkFormat::Extents | ForkFormat::Btree => self.remote_link(ino, len),
            ForkFormat::Dev => Err(Error::corrupt(
                format!("XFS symlink inode {} has a device fork", ino.ino),
                ino.offset + 5,
            )),
        }
    }

    /// A target stored in blocks; on v5 each block starts with a header.
    fn remote_link(&self, ino: &Inode, len: usize) -> Result<Vec<u8>> {
        let map = bmap::extents(self.src.as_ref(), &self.sb, ino)?;
        if !self.sb.is_v5() {
            let mut out = vec![0u8; len];
            bmap::read_mapped(self.src.as_ref(), &self.sb, ino, &map, 0, &mut out, false)?;
            return Ok(out);
        }
        let bs = self.sb.block_size as usize;
        let mut block = vec![0u8; bs];
        let mut out = Vec::with_capacity(len);
        let mut fb = 0u64;
        while out.len() < len {
            bmap::read_mapped(
                self.src.as_ref(),
                &self.sb,
                ino,
                &map,
                fb * bs as u64,
                &mut block,
                false,
            )?;
            let offset = be32(&block, 4) as usize;
            let bytes = be32(&block, 8) as usize;
            if be32(&block, 0) != SYMLINK_MAGIC
                || offset != out.len()
                || bytes == 0
                || bytes > bs - SYMLINK_HDR
                || offset + bytes > len
            {
                return Err(Error::corrupt(
                    format!("XFS symlink inode {}: bad remote block {fb}", ino.ino),
                    ino.offset,
                ));
            }
            out.extend_from_slice(&block[SYMLINK_HDR..SYMLINK_HDR + bytes]);
            fb += 1;
        }
        Ok(out)
    }
}

fn poisoned() -> Error {
    Error::invalid("XFS directory cache lock poisoned by an earlier panic")
}

fn metadata(ino: &Inode) -> Metadata {
    Metadata {
        file_type: ino.file_type(),
        size: ino.size,
        mode: Some(u32::from(ino.mode)),
        uid: Some(ino.uid),
        gid: Some(ino.gid),
        ino: Some(ino.ino),
    }
}

/// The file type recorded in a directory entry (XFS_DIR3_FT_*).
fn ftype(ft: u8) -> Option<FileType> {
    match ft {
        1 => Some(FileType::File),
        2 => Some(FileType::Dir),
        3..=6 => Some(FileType::Other),
        7 => Some(FileType::Symlink),
        _ => None,
    }
}

impl Filesystem for Xfs {
    fn kind(&self) -> FsKind {
        FsKind::Xfs
    }

    fn kind_name(&self) -> &'static str {
        "xfs"
    }

    fn label(&self) -> Option<String> {
        (!self.sb.label.is_empty()).then(|| String::from_utf8_lossy(&self.sb.label).into_owned())
    }

    fn uuid(&self) -> Option<String> {
        Some(self.sb.uuid_string())
    }

    fn notes(&self) -> Vec<String> {
        if self.sb.needs_repair {
            vec!["the XFS superblock asks for xfs_repair before the next mount".into()]
        } else {
            Vec::new()
        }
    }

    fn lstat(&self, path: &str) -> Result<Metadata> {
        Ok(metadata(&self.lookup(path)?))
    }

    fn read_dir(&self, path: &str) -> Result<Vec<DirEntry>> {
        let dir = self.lookup(path)?;
        if dir.file_type() != FileType::Dir {
            return Err(Error::invalid(format!("{path} is not a directory")));
        }
        let listing = self.listing(&dir)?;
        listing
            .entries
            .iter()
            .map(|e| {
                let file_type = match ftype(e.ftype) {
                    Some(t) => t,
                    None => file_type_of_mode(self.inode(e.ino)?.mode),
                };
                Ok(DirEntry {
                    name: String::from_utf8_lossy(&e.name).into_owned(),
                    file_type,
                })
            })
            .collect()
    }

    fn read_range(&self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let ino = self.lookup(path)?;
        if ino.file_type() != FileType::File {
            return Err(Error::invalid(format!("{path} is not a regular file")));
        }
        if ino.realtime {
            return Err(Error::unsupported(format!(
                "{path} lives on the XFS realtime device"
            )));
        }
        let len = len.min(ino.size.saturating_sub(offset));
        check_limit(
            "bytes read from one guest file at once",
            len,
            super::MAX_FILE_READ,
        )?;
        let mut out = vec![0u8; len as usize];
        if out.is_empty() {
            return Ok(out);
        }
        match ino.format {
            ForkFormat::Extents | ForkFormat::Btree => {
                let map = bmap::extents(self.src.as_ref(), &self.sb, &ino)?;
                bmap::read_mapped(self.src.as_ref(), &self.sb, &ino, &map, offset, &mut out, true)?;
            }
            ForkFormat::Local => {
                let src = usize::try_from(offset)
                    .ok()
                    .and_then(|o| ino.fork.get(o..o + out.len()))
                    .ok_or_else(|| {
                        Error::corrupt(
                            format!("XFS inline file {path} is longer than its inode"),
                            ino.offset,
                        )
                    })?;
                out.copy_from_slice(src);
            }
            ForkFormat::Dev => {
                return Err(Error::corrupt(
                    format!("XFS file {path} has a device fork"),
                    ino.offset + 5,
                ));
            }
        }
        Ok(out)
    }

    fn read_link(&self, path: &str) -> Result<String> {
        let ino = self.lookup(path)?;
        if ino.file_type() != FileType::Symlink {
            return Err(Error::invalid(format!("{path} is not a symlink")));
        }
        Ok(String::from_utf8_lossy(&self.read_link_inode(&ino)?).into_owned())
    }
}
