//! Guest filesystems, read-only, in userspace.
//!
//! Every filesystem reader implements [`Filesystem`], a small path-based
//! interface. Paths given to a `Filesystem` are *physical*: absolute inside
//! that filesystem, `/`-separated, with no `.`/`..` and no symlink in any
//! component but possibly the last. Symlinks, `..` and mount points are
//! resolved one level up, by [`guest::GuestRoot`], always inside the guest and
//! never on the host.

pub mod btrfs;
mod cursor;
pub mod ext4;
pub mod ext4w;
pub mod fat;
pub mod guest;
pub mod memfs;
pub mod ntfs;
pub mod probe;
pub mod xfs;

use serde::Serialize;
use std::sync::Arc;
use v2x_formats::block::BlockSource;
use v2x_formats::Result;

/// Largest file [`Filesystem::read_file`] callers ask for by default (an
/// initramfs can be large; a config file never is).
pub const MAX_FILE_READ: u64 = 512 << 20;

/// Longest symlink target we follow or report.
pub const MAX_LINK_LEN: u64 = 4096;

/// Most entries one directory listing may return.
pub const MAX_DIR_ENTRIES: usize = 1 << 20;

/// What kind of object a directory entry or inode is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileType {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A device node, FIFO, socket or anything else.
    Other,
}

/// `lstat` facts about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// Object type (a symlink is reported as a symlink, not followed).
    pub file_type: FileType,
    /// Size in bytes (for a symlink, the target length).
    pub size: u64,
    /// Unix permission bits and type, where the filesystem has them.
    pub mode: Option<u32>,
    /// Owner, where the filesystem has one.
    pub uid: Option<u32>,
    /// Group, where the filesystem has one.
    pub gid: Option<u32>,
    /// Inode (or file record) number, where the filesystem has one.
    pub ino: Option<u64>,
}

/// One entry of a directory listing (never `.` or `..`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The name, as stored (UTF-8 lossily converted where the fs is not UTF-8).
    pub name: String,
    /// The entry's type.
    pub file_type: FileType,
}

/// Which filesystem a volume holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsKind {
    /// ext2, ext3 or ext4 (told apart by [`Filesystem::kind_name`]).
    Ext,
    /// NTFS.
    Ntfs,
    /// FAT12/16/32.
    Fat,
    /// XFS v4/v5.
    Xfs,
    /// btrfs.
    Btrfs,
}

/// A read-only guest filesystem. Shared between threads.
pub trait Filesystem: Send + Sync {
    /// The family of this filesystem.
    fn kind(&self) -> FsKind;

    /// The name blkid would print as TYPE ("ext4", "ntfs", "vfat", "xfs", "btrfs").
    fn kind_name(&self) -> &'static str;

    /// The volume label, if set.
    fn label(&self) -> Option<String>;

    /// The filesystem UUID as blkid prints it (lowercase, dashed; for NTFS and
    /// FAT the serial number in blkid's form), if the filesystem has one.
    fn uuid(&self) -> Option<String>;

    /// Facts about the object at a physical path, without following a final symlink.
    fn lstat(&self, path: &str) -> Result<Metadata>;

    /// The entries of the directory at a physical path.
    fn read_dir(&self, path: &str) -> Result<Vec<DirEntry>>;

    /// Reads up to `len` bytes at `offset` of the regular file at a physical
    /// path. Returns fewer bytes only at end of file.
    fn read_range(&self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>>;

    /// The target of the symlink at a physical path.
    fn read_link(&self, path: &str) -> Result<String>;

    /// Things inspection should report about this filesystem (an unclean
    /// journal replayed in memory, a dirty flag, ...).
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }

    /// Every subvolume of the filesystem (btrfs ids 256 and up, the one this
    /// handle shows included and flagged `is_default` if it is the default); empty elsewhere.
    fn subvolumes(&self) -> Vec<Subvolume> {
        Vec::new()
    }

    /// Opens another subvolume of the same filesystem by its path from the
    /// top-level subvolume (btrfs only).
    fn open_subvolume(&self, path: &str) -> Result<Arc<dyn Filesystem>> {
        Err(v2x_formats::Error::unsupported(format!(
            "{} has no subvolumes (asked for {path})",
            self.kind_name()
        )))
    }

    /// Reads the whole regular file at a physical path, refusing files larger than `max`.
    fn read_file(&self, path: &str, max: u64) -> Result<Vec<u8>> {
        let meta = self.lstat(path)?;
        if meta.file_type != FileType::File {
            return Err(v2x_formats::Error::invalid(format!(
                "{path} is not a regular file"
            )));
        }
        v2x_formats::error::check_limit("guest file size", meta.size, max)?;
        self.read_range(path, 0, meta.size)
    }
}

/// One btrfs subvolume (or snapshot) as listed by [`Filesystem::subvolumes`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Subvolume {
    /// Subvolume id (5 is the top level).
    pub id: u64,
    /// Path from the top-level subvolume, without a leading slash ("@", "@home", "snapshots/1/snapshot").
    pub path: String,
    /// True for the default subvolume (what a plain mount shows).
    pub is_default: bool,
    /// True for read-only subvolumes (snapshots usually are).
    pub read_only: bool,
}

/// Opens the filesystem on `source` if a known superblock is there; `Ok(None)`
/// when no known filesystem is found. A known superblock that is damaged is an error.
pub fn open(source: Arc<dyn BlockSource>) -> Result<Option<Arc<dyn Filesystem>>> {
    probe::open(source)
}
