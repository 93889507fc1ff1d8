//! The public operations: path lookup, reading, and the edits a conversion
//! needs (replace, create, mkdir, symlink, unlink, rename, chmod, chown).

use super::extent::{read_map, to_extents, tree_blocks_needed, write_tree, FileMap, Run};
use super::inode::{Inode, EXTENTS_FL, INLINE_DATA_FL, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG};
use super::{Ext4Writer, MAX_FILE_BYTES, MAX_PATH_DEPTH};
use v2x_formats::error::check_limit;
use v2x_formats::{Error, Result};

/// Inode number of the root directory.
pub const ROOT_INO: u32 = 2;
/// Longest symlink target we create (one block would allow more; PATH_MAX
/// is the real limit).
pub const MAX_SYMLINK: usize = 4095;

/// What an inode is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Device, FIFO or socket.
    Other,
}

/// `stat` facts about an inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Inode number.
    pub ino: u32,
    /// Type.
    pub kind: FileKind,
    /// Permission bits (without the type).
    pub perm: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Hard links.
    pub links: u16,
}

fn kind_of(inode: &Inode) -> FileKind {
    match inode.kind() {
        S_IFREG => FileKind::File,
        S_IFDIR => FileKind::Dir,
        S_IFLNK => FileKind::Symlink,
        _ => FileKind::Other,
    }
}

/// Directory-entry type byte for `kind`.
fn dirent_type(kind: FileKind) -> u8 {
    match kind {
        FileKind::File => 1,
        FileKind::Dir => 2,
        FileKind::Symlink => 7,
        FileKind::Other => 0,
    }
}

/// Splits an absolute physical path into its components.
fn components(path: &str) -> Result<Vec<&[u8]>> {
    if !path.starts_with('/') {
        return Err(Error::invalid(format!("path '{path}' is not absolute")));
    }
    let parts: Vec<&[u8]> = path
        .split('/')
        .filter(|c| !c.is_empty())
        .map(str::as_bytes)
        .collect();
    check_limit("path depth", parts.len() as u64, MAX_PATH_DEPTH as u64)?;
    for p in &parts {
        check_name(p)?;
    }
    Ok(parts)
}

fn check_name(name: &[u8]) -> Result<()> {
    if name.is_empty()
        || name.len() > 255
        || name == b"."
        || name == b".."
        || name.contains(&0)
        || name.contains(&b'/')
    {
        return Err(Error::invalid(format!(
            "bad file name '{}'",
            String::from_utf8_lossy(name)
        )));
    }
    Ok(())
}

/// Splits `path` into its parent directory path and final name.
fn split_last(path: &str) -> Result<(String, Vec<u8>)> {
    let parts = components(path)?;
    let (last, dirs) = parts
        .split_last()
        .ok_or_else(|| Error::invalid("the root has no parent"))?;
    let mut parent = String::from("/");
    parent.push_str(
        &dirs
            .iter()
            .map(|d| String::from_utf8_lossy(d))
            .collect::<Vec<_>>()
            .join("/"),
    );
    Ok((parent, last.to_vec()))
}

/// The individual block numbers of runs `(first, len)`.
fn run_blocks(runs: &[(u64, u64)]) -> Vec<u64> {
    runs.iter().flat_map(|&(b, n)| b..b + n).collect()
}

impl Ext4Writer {
    /// The block map of `inode`.
    pub(super) fn file_map(&self, inode: &Inode) -> Result<FileMap> {
        if inode.flags() & INLINE_DATA_FL != 0 {
            return Err(Error::unsupported(format!("inode {} has inline data", inode.ino)));
        }
        read_map(self.dev.as_ref(), &self.sb, inode, self.inode_offset(inode.ino)?)
    }

    /// Inode number of the object at physical path `path` (the last
    /// component may be a symlink, which is not followed).
    pub fn lookup(&self, path: &str) -> Result<u32> {
        let mut ino = ROOT_INO;
        for name in components(path)? {
            let dir = self.read_inode(ino)?;
            if dir.kind() != S_IFDIR {
                return Err(Error::invalid(format!(
                    "'{path}': a component is not a directory"
                )));
            }
            let (_, e) = self
                .find_entry(&dir, name)?
                .ok_or_else(|| Error::not_found(path.to_string()))?;
            ino = e.ino;
        }
        Ok(ino)
    }

    /// `stat` of inode `ino`.
    pub fn stat(&self, ino: u32) -> Result<Stat> {
        let i = self.read_inode(ino)?;
        Ok(Stat {
            ino,
            kind: kind_of(&i),
            perm: i.mode() & 0o7777,
            uid: i.uid(),
            gid: i.gid(),
            size: i.size(),
            links: i.links(),
        })
    }

    /// Content of a file (or a symlink's target), holes read as zeros.
    pub fn read_file(&self, ino: u32) -> Result<Vec<u8>> {
        let inode = self.read_inode(ino)?;
        let size = inode.size();
        check_limit("file size", size, MAX_FILE_BYTES)?;
        if inode.kind() == S_IFLNK && size < 60 && inode.flags() & EXTENTS_FL == 0 && inode.file_acl() == 0 {
            return Ok(inode.i_block()[..size as usize].to_vec());
        }
        let map = self.file_map(&inode)?;
        let mut out = vec![0u8; size as usize];
        let bs = self.bs();
        for r in &map.runs {
            if r.uninit {
                continue;
            }
            let start = u64::from(r.lblk) * bs;
            if start >= size {
                continue;
            }
            let len = (u64::from(r.len) * bs).min(size - start);
            self.dev
                .read_at(r.pblk * bs, &mut out[start as usize..(start + len) as usize])?;
        }
        Ok(out)
    }

    /// Names in directory `path` (without `.` and `..`).
    pub fn read_dir(&self, path: &str) -> Result<Vec<(String, u32)>> {
        let dir = self.read_inode(self.lookup(path)?)?;
        if dir.kind() != S_IFDIR {
            return Err(Error::invalid(format!("'{path}' is not a directory")));
        }
        Ok(self
            .dir_entries(&dir)?
            .into_iter()
            .filter(|(n, _, _)| n != b"." && n != b"..")
            .map(|(n, ino, _)| (String::from_utf8_lossy(&n).into_owned(), ino))
            .collect())
    }

    fn group_of(&self, ino: u32) -> u32 {
        (ino - 1) / self.sb.inodes_per_group
    }

    /// Allocates blocks for `data` near `ino`'s group, writes it, and points
    /// `inode` at it (extent tree, size, i_blocks). Returns what was
    /// allocated, so a failure later can release it.
    fn give_content(&mut self, inode: &mut Inode, data: &[u8]) -> Result<Vec<(u64, u64)>> {
        check_limit("file size", data.len() as u64, MAX_FILE_BYTES)?;
        let bs = self.bs();
        let nblocks = (data.len() as u64).div_ceil(bs);
        let goal = self.group_of(inode.ino);
        let runs = self.alloc_blocks(goal, nblocks)?;
        let result = self.fill_runs(inode, data, &runs);
        match result {
            Ok(mut all) => {
                all.extend(runs);
                Ok(all)
            }
            Err(e) => {
                let _ = self.free_blocks(&runs);
                Err(e)
            }
        }
    }

    fn fill_runs(&mut self, inode: &mut Inode, data: &[u8], runs: &[(u64, u64)]) -> Result<Vec<(u64, u64)>> {
        let bs = self.bs();
        let mut file_runs = Vec::new();
        let mut lblk = 0u64;
        for &(pblk, len) in runs {
            let start = (lblk * bs) as usize;
            let end = (((lblk + len) * bs) as usize).min(data.len());
            let mut chunk = data[start..end].to_vec();
            chunk.resize((len * bs) as usize, 0);
            self.dev.write_at(pblk * bs, &chunk)?;
            file_runs.push(Run {
                lblk: lblk as u32,
                pblk,
                len: len as u32,
                uninit: false,
            });
            lblk += len;
        }
        let extents = to_extents(&file_runs);
        let nleaves = tree_blocks_needed(&self.sb, extents.len())?;
        let got = self.alloc_blocks(self.group_of(inode.ino), nleaves)?;
        let leaves = run_blocks(&got);
        write_tree(self.dev.as_ref(), &self.sb, inode, &extents, &leaves)?;
        inode.set_size(data.len() as u64);
        inode.set_fs_blocks(&self.sb, lblk + nleaves);
        Ok(got)
    }

    fn map_runs(map: &FileMap) -> Vec<(u64, u64)> {
        let mut v: Vec<(u64, u64)> = map.runs.iter().map(|r| (r.pblk, u64::from(r.len))).collect();
        v.extend(map.meta.iter().map(|&b| (b, 1)));
        v
    }

    /// Replaces the content of the regular file at `path` with `data`.
    pub fn write_file(&mut self, path: &str, data: &[u8]) -> Result<()> {
        let ino = self.lookup(path)?;
        let mut inode = self.read_inode(ino)?;
        if inode.kind() != S_IFREG {
            return Err(Error::invalid(format!("'{path}' is not a regular file")));
        }
        if inode.flags() & EXTENTS_FL == 0 {
            return Err(Error::unsupported(format!(
                "'{path}' is block-mapped (no extents); rewriting it is not implemented"
            )));
        }
        let old = self.file_map(&inode)?;
        self.give_content(&mut inode, data)?;
        inode.touch(self.now.0, self.now.1, false);
        self.write_inode(&inode)?;
        self.free_blocks(&Self::map_runs(&old))?;
        self.write_super()
    }

    /// Allocates and initialises a new inode of `mode` (type and permission
    /// bits) in `parent`'s group.
    fn new_inode(&mut self, parent: u32, mode: u16, uid: u32, gid: u32) -> Result<Inode> {
        let is_dir = mode & S_IFMT == S_IFDIR;
        let ino = self.alloc_inode(self.group_of(parent), is_dir)?;
        let generation = (self.now.0 as u32).wrapping_mul(2_654_435_761) ^ ino;
        let mut inode = Inode::new(&self.sb, ino, generation);
        inode.set_mode(mode);
        inode.set_owner(uid, gid);
        inode.set_links(if is_dir { 2 } else { 1 });
        inode.touch(self.now.0, self.now.1, true);
        Ok(inode)
    }

    /// Links the new `inode` into `dir_path` as `name`; on failure releases
    /// the inode and `blocks`.
    fn link_new(&mut self, dir_path: &str, name: &[u8], inode: &Inode, blocks: &[(u64, u64)]) -> Result<u32> {
        let result = self
            .write_inode(inode)
            .and_then(|_| self.add_link(dir_path, name, inode));
        if let Err(e) = result {
            let _ = self.free_blocks(blocks);
            let _ = self.free_inode(inode.ino, inode.kind() == S_IFDIR);
            let _ = self.write_super();
            return Err(e);
        }
        self.write_super()?;
        Ok(inode.ino)
    }

    /// Adds `name -> inode` to the directory at `dir_path` and updates it.
    fn add_link(&mut self, dir_path: &str, name: &[u8], inode: &Inode) -> Result<()> {
        let mut dir = self.read_inode(self.lookup(dir_path)?)?;
        let ftype = if self.sb.filetype {
            dirent_type(kind_of(inode))
        } else {
            0
        };
        self.add_entry(&mut dir, name, inode.ino, ftype)?;
        if inode.kind() == S_IFDIR {
            self.bump_links(&mut dir, 1)?;
        }
        dir.touch(self.now.0, self.now.1, false);
        self.write_inode(&dir)
    }

    /// Changes a directory's link count, following `dir_nlink` past 65000.
    fn bump_links(&self, dir: &mut Inode, delta: i32) -> Result<()> {
        let n = i32::from(dir.links());
        if n == 1 && self.sb.dir_nlink {
            return Ok(());
        }
        let m = n + delta;
        if m >= 65000 {
            if !self.sb.dir_nlink {
                return Err(Error::invalid(format!(
                    "directory inode {} has too many links",
                    dir.ino
                )));
            }
            dir.set_links(1);
        } else {
            dir.set_links(m.max(0) as u16);
        }
        Ok(())
    }

    /// Checks that `dir_path` is a directory without an entry `name`.
    fn check_new_name(&self, dir_path: &str, name: &str) -> Result<u32> {
        check_name(name.as_bytes())?;
        let parent = self.lookup(dir_path)?;
        let dir = self.read_inode(parent)?;
        if dir.kind() != S_IFDIR {
            return Err(Error::invalid(format!("'{dir_path}' is not a directory")));
        }
        if self.find_entry(&dir, name.as_bytes())?.is_some() {
            return Err(Error::invalid(format!("'{dir_path}/{name}' already exists")));
        }
        if !self.sb.extents {
            return Err(Error::unsupported(
                "creating files on a filesystem without extents",
            ));
        }
        Ok(parent)
    }

    /// Creates regular file `dir_path/name` with permission bits `mode`.
    pub fn create_file(
        &mut self,
        dir_path: &str,
        name: &str,
        mode: u16,
        uid: u32,
        gid: u32,
        data: &[u8],
    ) -> Result<u32> {
        let parent = self.check_new_name(dir_path, name)?;
        let mut inode = self.new_inode(parent, S_IFREG | (mode & 0o7777), uid, gid)?;
        let blocks = match self.give_content(&mut inode, data) {
            Ok(b) => b,
            Err(e) => {
                let _ = self.free_inode(inode.ino, false);
                let _ = self.write_super();
                return Err(e);
            }
        };
        self.link_new(dir_path, name.as_bytes(), &inode, &blocks)
    }

    /// Creates directory `dir_path/name`.
    pub fn mkdir(&mut self, dir_path: &str, name: &str, mode: u16, uid: u32, gid: u32) -> Result<u32> {
        let parent = self.check_new_name(dir_path, name)?;
        let mut inode = self.new_inode(parent, S_IFDIR | (mode & 0o7777), uid, gid)?;
        let t = if self.sb.filetype { 2 } else { 0 };
        let leaf = self.new_leaf(&inode, &[(inode.ino, b".", t), (parent, b"..", t)]);
        let blocks = match leaf.and_then(|b| self.give_content(&mut inode, &b)) {
            Ok(b) => b,
            Err(e) => {
                let _ = self.free_inode(inode.ino, true);
                let _ = self.write_super();
                return Err(e);
            }
        };
        self.link_new(dir_path, name.as_bytes(), &inode, &blocks)
    }

    /// Creates symlink `dir_path/name -> target` (inline below 60 bytes).
    pub fn symlink(&mut self, dir_path: &str, name: &str, target: &str, uid: u32, gid: u32) -> Result<u32> {
        let t = target.as_bytes();
        if t.is_empty() || t.len() > MAX_SYMLINK || t.len() as u64 >= self.bs() {
            return Err(Error::invalid(format!("symlink target of {} bytes", t.len())));
        }
        let parent = self.check_new_name(dir_path, name)?;
        let mut inode = self.new_inode(parent, S_IFLNK | 0o777, uid, gid)?;
        let blocks = if t.len() < 60 {
            inode.i_block_mut()[..t.len()].copy_from_slice(t);
            inode.set_size(t.len() as u64);
            Vec::new()
        } else {
            match self.give_content(&mut inode, t) {
                Ok(b) => b,
                Err(e) => {
                    let _ = self.free_inode(inode.ino, false);
                    let _ = self.write_super();
                    return Err(e);
                }
            }
        };
        self.link_new(dir_path, name.as_bytes(), &inode, &blocks)
    }

    /// Drops one link of `ino`; frees it and its blocks at zero.
    fn drop_link(&mut self, ino: u32) -> Result<()> {
        let mut inode = self.read_inode(ino)?;
        let links = inode.links().saturating_sub(1);
        if links > 0 {
            inode.set_links(links);
            inode.touch_ctime(self.now.0, self.now.1);
            return self.write_inode(&inode);
        }
        let is_fast_link = inode.kind() == S_IFLNK && inode.flags() & EXTENTS_FL == 0 && inode.size() < 60;
        let blocks = if is_fast_link {
            Vec::new()
        } else {
            Self::map_runs(&self.file_map(&inode)?)
        };
        inode.set_links(0);
        inode.set_dtime(self.now.0 as u32);
        inode.set_size(0);
        inode.set_fs_blocks(&self.sb, 0);
        inode.i_block_mut().fill(0);
        inode.set_flags(inode.flags() & !EXTENTS_FL);
        self.write_inode(&inode)?;
        self.free_blocks(&blocks)?;
        self.free_inode(ino, false)
    }

    /// Refuses to unlink what we cannot release cleanly.
    fn check_removable(&self, ino: u32) -> Result<Inode> {
        let inode = self.read_inode(ino)?;
        if inode.kind() == S_IFDIR {
            return Err(Error::invalid(format!(
                "inode {ino} is a directory; removing directories is not implemented"
            )));
        }
        if inode.links() <= 1 && inode.file_acl() != 0 {
            return Err(Error::unsupported(format!(
                "inode {ino} has an extended attribute block; freeing it is not implemented"
            )));
        }
        if inode.links() <= 1
            && inode.kind() != S_IFLNK
            && inode.flags() & EXTENTS_FL == 0
            && inode.size() > 0
        {
            return Err(Error::unsupported(format!(
                "inode {ino} is block-mapped; freeing it is not implemented"
            )));
        }
        Ok(inode)
    }

    /// Removes the non-directory at `path`.
    pub fn unlink(&mut self, path: &str) -> Result<()> {
        let (dir_path, name) = split_last(path)?;
        let ino = self.lookup(path)?;
        self.check_removable(ino)?;
        let mut dir = self.read_inode(self.lookup(&dir_path)?)?;
        self.remove_entry(&dir, &name)?;
        dir.touch(self.now.0, self.now.1, false);
        self.write_inode(&dir)?;
        self.drop_link(ino)?;
        self.write_super()
    }

    /// Renames `from` to `to` (both physical paths in this filesystem). An
    /// existing non-directory `to` is replaced.
    pub fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        let (from_dir, from_name) = split_last(from)?;
        let (to_dir, to_name) = split_last(to)?;
        let ino = self.lookup(from)?;
        let inode = self.read_inode(ino)?;
        let is_dir = inode.kind() == S_IFDIR;
        if is_dir && (to.starts_with(&format!("{}/", from.trim_end_matches('/'))) || to == from) {
            return Err(Error::invalid(format!("cannot move '{from}' into itself")));
        }
        let to_parent = self.lookup(&to_dir)?;
        let from_parent = self.lookup(&from_dir)?;
        let existing = match self.lookup(to) {
            Ok(e) => Some(e),
            Err(Error::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        if let Some(old) = existing {
            if old == ino {
                return Ok(());
            }
            if is_dir {
                return Err(Error::unsupported("renaming a directory over an existing entry"));
            }
            self.check_removable(old)?;
            let dir = self.read_inode(to_parent)?;
            self.remove_entry(&dir, &to_name)?;
            self.drop_link(old)?;
        }
        self.add_link_existing(to_parent, &to_name, &inode, from_parent != to_parent)?;
        let mut dir = self.read_inode(from_parent)?;
        self.remove_entry(&dir, &from_name)?;
        if is_dir && from_parent != to_parent {
            self.bump_links(&mut dir, -1)?;
            self.set_dotdot(&inode, to_parent)?;
        }
        dir.touch(self.now.0, self.now.1, false);
        self.write_inode(&dir)?;
        let mut moved = self.read_inode(ino)?;
        moved.touch_ctime(self.now.0, self.now.1);
        self.write_inode(&moved)?;
        self.write_super()
    }

    fn add_link_existing(&mut self, parent: u32, name: &[u8], inode: &Inode, new_parent: bool) -> Result<()> {
        let mut dir = self.read_inode(parent)?;
        let ftype = if self.sb.filetype {
            dirent_type(kind_of(inode))
        } else {
            0
        };
        self.add_entry(&mut dir, name, inode.ino, ftype)?;
        if new_parent && inode.kind() == S_IFDIR {
            self.bump_links(&mut dir, 1)?;
        }
        dir.touch(self.now.0, self.now.1, false);
        self.write_inode(&dir)
    }

    /// Adds one block at the end of directory `dir` (extent-mapped), whose
    /// current map is `map`; returns its physical number. The caller
    /// writes the block and the inode.
    pub(super) fn append_block(&mut self, dir: &mut Inode, map: FileMap) -> Result<u64> {
        if dir.flags() & EXTENTS_FL == 0 {
            return Err(Error::unsupported(format!(
                "directory inode {} is block-mapped; growing it is not implemented",
                dir.ino
            )));
        }
        let bs = self.bs();
        let lblk =
            u32::try_from(dir.size().div_ceil(bs)).map_err(|_| Error::invalid("directory too large"))?;
        let goal = match map.runs.last() {
            Some(r) => {
                ((r.pblk - u64::from(self.sb.first_data_block)) / u64::from(self.sb.blocks_per_group)) as u32
            }
            None => self.group_of(dir.ino),
        };
        let pblk = self.alloc_blocks(goal, 1)?[0].0;
        let mut runs = map.runs.clone();
        match runs.last_mut() {
            Some(r)
                if !r.uninit
                    && r.lblk.checked_add(r.len) == Some(lblk)
                    && r.pblk + u64::from(r.len) == pblk =>
            {
                r.len += 1
            }
            _ => runs.push(Run {
                lblk,
                pblk,
                len: 1,
                uninit: false,
            }),
        }
        let extents = to_extents(&runs);
        let nleaves = tree_blocks_needed(&self.sb, extents.len())?;
        let got = self.alloc_blocks(goal, nleaves)?;
        let leaves = run_blocks(&got);
        write_tree(self.dev.as_ref(), &self.sb, dir, &extents, &leaves)?;
        let data: u64 = runs.iter().map(|r| u64::from(r.len)).sum();
        dir.set_fs_blocks(&self.sb, data + nleaves);
        let stale: Vec<(u64, u64)> = map.meta.iter().map(|&b| (b, 1)).collect();
        self.free_blocks(&stale)?;
        Ok(pblk)
    }

    /// Sets the permission bits of `path` (the type bits are kept).
    pub fn chmod(&mut self, path: &str, mode: u16) -> Result<()> {
        let mut inode = self.read_inode(self.lookup(path)?)?;
        inode.set_mode((inode.mode() & S_IFMT) | (mode & 0o7777));
        inode.touch_ctime(self.now.0, self.now.1);
        self.write_inode(&inode)
    }

    /// Sets the owner and group of `path`.
    pub fn chown(&mut self, path: &str, uid: u32, gid: u32) -> Result<()> {
        let mut inode = self.read_inode(self.lookup(path)?)?;
        inode.set_owner(uid, gid);
        inode.touch_ctime(self.now.0, self.now.1);
        self.write_inode(&inode)
    }
}
