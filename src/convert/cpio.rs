//! Writing a "newc" cpio archive to append to a guest's initramfs. The kernel
//! unpacks concatenated archives in order, so a second archive adds files to
//! the early userspace without rebuilding the first one.
//!
//! Two rules from trials on real guests are enforced here:
//! the initramfs must be padded to 4 bytes before the new archive (see
//! [`append_padding`]), and a path must never be written through a directory
//! entry where the original archive has a symlink (`lib -> usr/lib`): the new
//! entry would replace the link. [`ArchiveTree::real_path`] resolves such
//! links so files land in the real directories.

use std::collections::{BTreeMap, BTreeSet};
use v2x_formats::{Error, Result};

/// Most symlinks followed while resolving one archive path.
const MAX_LINK_FOLLOWS: u32 = 40;

/// What a path is in the original archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A directory.
    Dir,
    /// A regular file or anything else that is not a directory or a symlink.
    File,
    /// A symlink and its target.
    Symlink(String),
}

/// The paths of an existing archive (without leading `/` or `./`).
#[derive(Debug, Default, Clone)]
pub struct ArchiveTree {
    nodes: BTreeMap<String, Node>,
}

fn clean(path: &str) -> String {
    path.trim_start_matches("./")
        .trim_start_matches('/')
        .trim_end_matches('/')
        .to_string()
}

impl ArchiveTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one entry of the original archive.
    pub fn insert(&mut self, path: &str, node: Node) {
        self.nodes.insert(clean(path), node);
    }

    /// True when `path` (already real) exists.
    pub fn contains(&self, path: &str) -> bool {
        self.nodes.contains_key(&clean(path))
    }

    /// Every path of the archive, as stored.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.nodes.keys().map(String::as_str)
    }

    /// Resolves the directory part of `path` through the archive's symlinks,
    /// so that writing the result never replaces a symlink. The final
    /// component is kept as is.
    pub fn real_path(&self, path: &str) -> Result<String> {
        let mut todo: Vec<String> = clean(path)
            .split('/')
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect();
        todo.reverse();
        let mut done: Vec<String> = Vec::new();
        let mut follows = 0;
        while let Some(c) = todo.pop() {
            if c == "." {
                continue;
            }
            if c == ".." {
                done.pop();
                continue;
            }
            done.push(c);
            if todo.is_empty() {
                break;
            }
            let cur = done.join("/");
            if let Some(Node::Symlink(target)) = self.nodes.get(&cur) {
                follows += 1;
                if follows > MAX_LINK_FOLLOWS {
                    return Err(Error::LimitExceeded {
                        what: "symlinks followed in one initramfs path",
                        value: follows.into(),
                        max: MAX_LINK_FOLLOWS.into(),
                    });
                }
                done.pop();
                if target.starts_with('/') {
                    done.clear();
                }
                for t in target.split('/').filter(|c| !c.is_empty()).rev() {
                    todo.push(t.to_string());
                }
            }
        }
        Ok(done.join("/"))
    }
}

/// Builds a newc archive in memory.
#[derive(Debug, Default)]
pub struct CpioWriter {
    out: Vec<u8>,
    dirs: BTreeSet<String>,
    ino: u32,
    mtime: u32,
}

impl CpioWriter {
    /// An empty archive whose entries carry modification time `mtime`.
    pub fn new(mtime: u32) -> Self {
        Self {
            out: Vec::new(),
            dirs: BTreeSet::new(),
            ino: 1,
            mtime,
        }
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) -> Result<()> {
        let namesize = name.len() + 1;
        let filesize =
            u32::try_from(data.len()).map_err(|_| Error::invalid(format!("{name} is too large for cpio")))?;
        let fields = [
            self.ino,
            mode,
            0,
            0,
            if mode & 0o170000 == 0o040000 { 2 } else { 1 },
            self.mtime,
            filesize,
            0,
            0,
            0,
            0,
            namesize as u32,
            0,
        ];
        self.ino += 1;
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        pad4(&mut self.out);
        self.out.extend_from_slice(data);
        pad4(&mut self.out);
        Ok(())
    }

    /// Adds a directory (once), with its parents, unless the original tree has it.
    pub fn dir(&mut self, path: &str, original: &ArchiveTree) -> Result<()> {
        let path = clean(path);
        let mut cur = String::new();
        for c in path.split('/').filter(|c| !c.is_empty()) {
            if !cur.is_empty() {
                cur.push('/');
            }
            cur.push_str(c);
            if original.contains(&cur) || self.dirs.contains(&cur) {
                if let Some(Node::Symlink(_)) = original.nodes.get(&cur) {
                    return Err(Error::invalid(format!(
                        "refusing to write directory {cur} over a symlink of the original initramfs"
                    )));
                }
                continue;
            }
            self.dirs.insert(cur.clone());
            let name = cur.clone();
            self.entry(&name, 0o040755, &[])?;
        }
        Ok(())
    }

    /// Adds a regular file at a real path (see [`ArchiveTree::real_path`]), creating parents.
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8], original: &ArchiveTree) -> Result<()> {
        let path = clean(path);
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent, original)?;
        }
        self.entry(&path, 0o100000 | (mode & 0o7777), data)
    }

    /// Finishes the archive with the trailer, padded to 512 bytes like cpio(1) does.
    pub fn finish(mut self) -> Vec<u8> {
        self.ino = 0;
        let _ = self.entry("TRAILER!!!", 0, &[]);
        while self.out.len() % 512 != 0 {
            self.out.push(0);
        }
        self.out
    }
}

fn pad4(v: &mut Vec<u8>) {
    while v.len() % 4 != 0 {
        v.push(0);
    }
}

/// Zero bytes to add after an initramfs of `len` bytes so an appended archive
/// starts on a 4-byte boundary (otherwise the kernel reports "invalid magic"
/// and silently ignores it).
pub fn append_padding(len: u64) -> usize {
    ((4 - len % 4) % 4) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinked_dirs_are_written_through() {
        let mut t = ArchiveTree::new();
        t.insert("usr", Node::Dir);
        t.insert("usr/lib", Node::Dir);
        t.insert("lib", Node::Symlink("usr/lib".into()));
        t.insert("lib64", Node::Symlink("/usr/lib64".into()));
        assert_eq!(
            t.real_path("lib/modules/6.1/kernel/virtio_blk.ko").unwrap(),
            "usr/lib/modules/6.1/kernel/virtio_blk.ko"
        );
        assert_eq!(t.real_path("/lib64/x").unwrap(), "usr/lib64/x");
        let mut l = ArchiveTree::new();
        l.insert("a", Node::Symlink("a".into()));
        assert!(l.real_path("a/b").is_err());
    }

    #[test]
    fn never_a_directory_over_a_symlink() {
        let mut t = ArchiveTree::new();
        t.insert("lib", Node::Symlink("usr/lib".into()));
        let mut w = CpioWriter::new(0);
        assert!(w.file("lib/modules/x.ko", 0o644, b"x", &t).is_err());
        let mut w = CpioWriter::new(0);
        let real = t.real_path("lib/modules/x.ko").unwrap();
        w.file(&real, 0o644, b"x", &t).unwrap();
    }

    #[test]
    fn padding() {
        assert_eq!(append_padding(0), 0);
        assert_eq!(append_padding(5), 3);
        assert_eq!(append_padding(8), 0);
    }
}
