//! The guest's directory tree: filesystems mounted at guest paths, with
//! symlinks and `..` resolved inside the guest, never on the host.

use super::{DirEntry, FileType, Filesystem, Metadata, MAX_FILE_READ, MAX_LINK_LEN};
use std::sync::Arc;
use v2x_formats::{Error, Result};

/// Most symlinks followed while resolving one path (Linux's limit).
pub const MAX_SYMLINK_FOLLOWS: u32 = 40;

/// Most mount points one guest tree may have.
pub const MAX_MOUNTS: usize = 256;

/// A filesystem mounted at a guest path.
#[derive(Clone)]
pub struct Mount {
    /// Guest path of the mount point ("/", "/boot", "/boot/efi").
    pub at: String,
    /// The filesystem.
    pub fs: Arc<dyn Filesystem>,
    /// Which volume it came from (for reports), e.g. "sda1" or "vg0/root".
    pub volume: String,
}

/// A guest tree: a root filesystem plus other mounts.
#[derive(Clone)]
pub struct GuestRoot {
    mounts: Vec<Mount>,
}

/// Where a resolved guest path lives.
#[derive(Clone)]
pub struct Resolved {
    /// The canonical guest path (no symlinks, no `..`).
    pub guest_path: String,
    /// Index into the mount table.
    pub mount: usize,
    /// The physical path inside that mount's filesystem.
    pub fs_path: String,
}

impl GuestRoot {
    /// A tree with only a root filesystem.
    pub fn new(root: Arc<dyn Filesystem>, volume: impl Into<String>) -> Self {
        Self {
            mounts: vec![Mount {
                at: "/".into(),
                fs: root,
                volume: volume.into(),
            }],
        }
    }

    /// Mounts another filesystem at a guest path (which should exist as a directory).
    pub fn mount(&mut self, at: &str, fs: Arc<dyn Filesystem>, volume: impl Into<String>) -> Result<()> {
        if self.mounts.len() >= MAX_MOUNTS {
            return Err(Error::LimitExceeded {
                what: "mount points",
                value: self.mounts.len() as u64 + 1,
                max: MAX_MOUNTS as u64,
            });
        }
        let at = normalize_lexically(at);
        self.mounts.retain(|m| m.at != at);
        self.mounts.push(Mount {
            at,
            fs,
            volume: volume.into(),
        });
        Ok(())
    }

    /// The mount table, root first.
    pub fn mounts(&self) -> &[Mount] {
        &self.mounts
    }

    /// The root filesystem.
    pub fn root_fs(&self) -> &Arc<dyn Filesystem> {
        &self.mounts[0].fs
    }

    /// The mount that holds canonical guest path `path` (longest prefix).
    fn mount_for(&self, path: &str) -> (usize, String) {
        let mut best = 0;
        let mut best_len = 0;
        for (i, m) in self.mounts.iter().enumerate() {
            let covers = m.at == "/"
                || path == m.at
                || (path.starts_with(&m.at) && path.as_bytes().get(m.at.len()) == Some(&b'/'));
            if covers && m.at.len() >= best_len {
                best = i;
                best_len = m.at.len();
            }
        }
        let at = &self.mounts[best].at;
        let rest = if at == "/" { path } else { &path[at.len()..] };
        let fs_path = if rest.is_empty() {
            "/".to_string()
        } else {
            rest.to_string()
        };
        (best, fs_path)
    }

    fn lstat_canonical(&self, path: &str) -> Result<(Metadata, usize, String)> {
        let (m, fs_path) = self.mount_for(path);
        let meta = self.mounts[m].fs.lstat(&fs_path)?;
        Ok((meta, m, fs_path))
    }

    /// Resolves a guest path, following symlinks in every component (and in
    /// the last one when `follow_last`). Absolute link targets restart at the
    /// guest root; `..` never climbs above it.
    pub fn resolve(&self, path: &str, follow_last: bool) -> Result<Resolved> {
        let mut follows = 0u32;
        // Components still to walk, in reverse order so we can push link targets.
        let mut todo: Vec<String> = components(path).into_iter().rev().collect();
        let mut done: Vec<String> = Vec::new();
        while let Some(comp) = todo.pop() {
            match comp.as_str() {
                "." => continue,
                ".." => {
                    done.pop();
                    continue;
                }
                _ => {}
            }
            done.push(comp);
            let current = join(&done);
            let is_last = todo.is_empty();
            let (meta, m, fs_path) = self.lstat_canonical(&current)?;
            if meta.file_type == FileType::Symlink && (!is_last || follow_last) {
                follows += 1;
                if follows > MAX_SYMLINK_FOLLOWS {
                    return Err(Error::LimitExceeded {
                        what: "symlinks followed in one guest path",
                        value: u64::from(follows),
                        max: u64::from(MAX_SYMLINK_FOLLOWS),
                    });
                }
                let target = self.mounts[m].fs.read_link(&fs_path)?;
                if target.len() as u64 > MAX_LINK_LEN || target.is_empty() {
                    return Err(Error::invalid(format!(
                        "guest symlink {current} has an unusable target of {} bytes",
                        target.len()
                    )));
                }
                done.pop();
                if target.starts_with('/') {
                    done.clear();
                }
                for c in components(&target).into_iter().rev() {
                    todo.push(c);
                }
            } else if !is_last && meta.file_type != FileType::Dir {
                return Err(Error::not_found(format!(
                    "{current} is not a directory (in {path})"
                )));
            }
        }
        let guest_path = join(&done);
        let (mount, fs_path) = self.mount_for(&guest_path);
        Ok(Resolved {
            guest_path,
            mount,
            fs_path,
        })
    }

    /// Where a file that may not exist yet would live: the parent directory
    /// is resolved (symlinks followed, and it must exist); the last component
    /// is kept as given. Returns the resolution and the last component.
    pub fn resolve_new(&self, path: &str) -> Result<(Resolved, String)> {
        let mut comps = components(path);
        let name = comps
            .pop()
            .filter(|n| n != "." && n != "..")
            .ok_or_else(|| Error::invalid(format!("'{path}' has no file name")))?;
        let parent = self.resolve(&join(&comps), true)?;
        let guest_path = if parent.guest_path == "/" {
            format!("/{name}")
        } else {
            format!("{}/{name}", parent.guest_path)
        };
        let (mount, fs_path) = self.mount_for(&guest_path);
        Ok((
            Resolved {
                guest_path,
                mount,
                fs_path,
            },
            name,
        ))
    }

    /// `stat`: follows symlinks.
    pub fn stat(&self, path: &str) -> Result<Metadata> {
        let r = self.resolve(path, true)?;
        self.mounts[r.mount].fs.lstat(&r.fs_path)
    }

    /// `lstat`: does not follow a final symlink.
    pub fn lstat(&self, path: &str) -> Result<Metadata> {
        let r = self.resolve(path, false)?;
        self.mounts[r.mount].fs.lstat(&r.fs_path)
    }

    /// True when `path` exists (following symlinks). Errors other than "not found" are returned.
    pub fn exists(&self, path: &str) -> Result<bool> {
        match self.stat(path) {
            Ok(_) => Ok(true),
            Err(Error::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Lists a directory (following symlinks).
    pub fn read_dir(&self, path: &str) -> Result<Vec<DirEntry>> {
        let r = self.resolve(path, true)?;
        let mut entries = self.mounts[r.mount].fs.read_dir(&r.fs_path)?;
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// Reads a whole file (following symlinks), up to `max` bytes.
    pub fn read_file_max(&self, path: &str, max: u64) -> Result<Vec<u8>> {
        let r = self.resolve(path, true)?;
        self.mounts[r.mount].fs.read_file(&r.fs_path, max)
    }

    /// Reads a whole file (following symlinks), up to [`MAX_FILE_READ`] bytes.
    pub fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        self.read_file_max(path, MAX_FILE_READ)
    }

    /// Reads a text file if it exists: `Ok(None)` when it does not.
    pub fn read_text_opt(&self, path: &str, max: u64) -> Result<Option<String>> {
        match self.read_file_max(path, max) {
            Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads `len` bytes at `offset` of a file (following symlinks).
    pub fn read_range(&self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let r = self.resolve(path, true)?;
        self.mounts[r.mount].fs.read_range(&r.fs_path, offset, len)
    }

    /// The target of a symlink.
    pub fn read_link(&self, path: &str) -> Result<String> {
        let r = self.resolve(path, false)?;
        self.mounts[r.mount].fs.read_link(&r.fs_path)
    }

    /// Finds an entry of directory `dir` whose name equals `name` ignoring
    /// ASCII case (Windows paths); returns the entry's real name.
    pub fn find_case_insensitive(&self, dir: &str, name: &str) -> Result<Option<String>> {
        Ok(self
            .read_dir(dir)?
            .into_iter()
            .find(|e| e.name.eq_ignore_ascii_case(name))
            .map(|e| e.name))
    }

    /// Resolves a `/`-separated path component by component ignoring ASCII
    /// case, as Windows does; returns the real guest path when it exists.
    pub fn resolve_case_insensitive(&self, path: &str) -> Result<Option<String>> {
        let mut cur = String::from("/");
        for c in components(path) {
            match self.find_case_insensitive(&cur, &c) {
                Ok(Some(real)) => {
                    if cur != "/" {
                        cur.push('/');
                    }
                    cur.push_str(&real);
                }
                Ok(None) | Err(Error::NotFound(_)) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        Ok(Some(cur))
    }
}

/// Splits a path into its non-empty components.
pub fn components(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

fn join(parts: &[String]) -> String {
    if parts.is_empty() {
        "/".to_string()
    } else {
        let mut s = String::new();
        for p in parts {
            s.push('/');
            s.push_str(p);
        }
        s
    }
}

/// Normalizes `.`, `..` and repeated slashes without touching symlinks.
pub fn normalize_lexically(path: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    for c in components(path) {
        match c.as_str() {
            "." => {}
            ".." => {
                out.pop();
            }
            _ => out.push(c),
        }
    }
    join(&out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::memfs::MemFs;

    fn tree() -> GuestRoot {
        let mut root = MemFs::new();
        root.dir("/etc");
        root.file("/etc/hostname", b"guest\n");
        root.dir("/usr/lib");
        root.file("/usr/lib/os-release", b"ID=debian\n");
        root.symlink("/etc/os-release", "../usr/lib/os-release");
        root.symlink("/lib", "usr/lib");
        root.symlink("/loop", "/loop");
        root.symlink("/escape", "../../../../etc/hostname");
        root.dir("/boot");
        let mut boot = MemFs::new();
        boot.file("/vmlinuz-6.1", b"kernel");
        boot.symlink("/vmlinuz", "vmlinuz-6.1");
        let mut g = GuestRoot::new(Arc::new(root), "sda2");
        g.mount("/boot", Arc::new(boot), "sda1").unwrap();
        g
    }

    #[test]
    fn relative_and_absolute_links_resolve_inside_the_guest() {
        let g = tree();
        assert_eq!(g.read_file("/etc/os-release").unwrap(), b"ID=debian\n");
        assert_eq!(g.read_file("/lib/os-release").unwrap(), b"ID=debian\n");
        // `..` past the root stays at the root.
        assert_eq!(g.read_file("/escape").unwrap(), b"guest\n");
        assert_eq!(
            g.resolve("/lib/os-release", true).unwrap().guest_path,
            "/usr/lib/os-release"
        );
    }

    #[test]
    fn mounts_are_crossed() {
        let g = tree();
        assert_eq!(g.read_file("/boot/vmlinuz").unwrap(), b"kernel");
        let r = g.resolve("/boot/vmlinuz", true).unwrap();
        assert_eq!((r.mount, r.fs_path.as_str()), (1, "/vmlinuz-6.1"));
        assert_eq!(g.read_dir("/boot").unwrap().len(), 2);
    }

    #[test]
    fn symlink_loops_end_in_an_error() {
        let g = tree();
        assert!(matches!(g.stat("/loop"), Err(Error::LimitExceeded { .. })));
        assert!(matches!(g.stat("/nope"), Err(Error::NotFound(_))));
        assert!(!g.exists("/etc/nope").unwrap());
    }

    #[test]
    fn case_insensitive_lookup() {
        let g = tree();
        assert_eq!(
            g.resolve_case_insensitive("/ETC/HOSTNAME").unwrap().as_deref(),
            Some("/etc/hostname")
        );
        assert_eq!(g.resolve_case_insensitive("/etc/missing").unwrap(), None);
    }
}
