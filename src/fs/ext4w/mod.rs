//! A narrow ext4 *mutator*: edits an ext4 filesystem in place (normally
//! through the copy-on-write [`Overlay`]) so that a guest can be converted
//! offline. ext4-view stays the reader; this module only writes what the
//! conversion needs — replace, create, link and unlink files — and keeps
//! every checksum, bitmap and free count consistent so `e2fsck -fn` is clean.
//!
//! It refuses, before writing anything, filesystems it cannot edit safely
//! (journal needing recovery, inline data, encryption, bigalloc, meta_bg,
//! quota, ...). The journal is never touched: a clean journal stays clean.

mod alloc;
pub mod csum;
mod dir;
pub mod extent;
pub mod hash;
pub mod inode;
pub mod layout;
mod ops;

use crate::overlay::Overlay;
use inode::Inode;
use layout::{GroupDesc, Superblock, SB_OFFSET, SB_SIZE};
use std::collections::HashMap;
use std::sync::Arc;
use v2x_formats::block::BlockSource;
use v2x_formats::{Error, Result};

pub use ops::FileKind;

/// Longest path (in components) we walk.
pub const MAX_PATH_DEPTH: usize = 256;
/// Largest directory we read or extend, in blocks.
pub const MAX_DIR_BLOCKS: u64 = 1 << 16;
/// Largest file content `read_file`/`write_file` handle.
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// Byte-addressed storage the writer edits: a partition of an overlay, or a
/// plain image file in tests.
pub trait Device: Send + Sync {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Reads exactly `buf.len()` bytes at `off`.
    fn read_at(&self, off: u64, buf: &mut [u8]) -> Result<()>;
    /// Writes `data` at `off`.
    fn write_at(&self, off: u64, data: &[u8]) -> Result<()>;
}

/// A byte range (a partition) of an [`Overlay`].
pub struct OverlayRange {
    overlay: Arc<Overlay>,
    start: u64,
    len: u64,
}

impl OverlayRange {
    /// The `len` bytes of `overlay` starting at `start`.
    pub fn new(overlay: Arc<Overlay>, start: u64, len: u64) -> Result<Self> {
        if start.checked_add(len).is_none_or(|end| end > overlay.size()) {
            return Err(Error::invalid("partition range lies outside the disk"));
        }
        Ok(OverlayRange { overlay, start, len })
    }

    fn check(&self, off: u64, len: usize) -> Result<u64> {
        match off.checked_add(len as u64) {
            Some(end) if end <= self.len => Ok(self.start + off),
            _ => Err(Error::invalid(format!(
                "access at {off:#x}+{len} beyond the partition"
            ))),
        }
    }
}

impl Device for OverlayRange {
    fn size(&self) -> u64 {
        self.len
    }
    fn read_at(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        let at = self.check(off, buf.len())?;
        self.overlay.read_at(at, buf)
    }
    fn write_at(&self, off: u64, data: &[u8]) -> Result<()> {
        let at = self.check(off, data.len())?;
        self.overlay.write_at(at, data)
    }
}

/// A volume (partition or logical volume) opened over the copy-on-write
/// overlay: reads see earlier edits, writes land in the overlay through
/// [`BlockSource::write_through`]. Over a plain image reader every write is
/// refused, so the source can never be changed this way.
pub struct VolumeDevice(pub Arc<dyn BlockSource>);

impl Device for VolumeDevice {
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn read_at(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        self.0.read_at(off, buf)
    }
    fn write_at(&self, off: u64, data: &[u8]) -> Result<()> {
        self.0.write_through(off, data)
    }
}

/// A filesystem image file edited directly (tests, tools).
pub struct FileDevice {
    file: std::fs::File,
    len: u64,
}

impl FileDevice {
    /// Opens `path` read-write.
    pub fn open(path: &std::path::Path) -> Result<Self> {
        let ctx = || format!("opening {}", path.display());
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io(ctx(), e))?;
        let len = file.metadata().map_err(|e| Error::io(ctx(), e))?.len();
        Ok(FileDevice { file, len })
    }
}

impl Device for FileDevice {
    fn size(&self) -> u64 {
        self.len
    }
    fn read_at(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        use std::os::unix::fs::FileExt;
        if off.checked_add(buf.len() as u64).is_none_or(|e| e > self.len) {
            return Err(Error::invalid(format!("read at {off:#x} beyond the image")));
        }
        self.file
            .read_exact_at(buf, off)
            .map_err(|e| Error::io(format!("reading at {off:#x}"), e))
    }
    fn write_at(&self, off: u64, data: &[u8]) -> Result<()> {
        use std::os::unix::fs::FileExt;
        if off.checked_add(data.len() as u64).is_none_or(|e| e > self.len) {
            return Err(Error::invalid(format!("write at {off:#x} beyond the image")));
        }
        self.file
            .write_all_at(data, off)
            .map_err(|e| Error::io(format!("writing at {off:#x}"), e))
    }
}

/// A filesystem image held in memory (fuzzing, unit tests).
pub struct MemDevice {
    data: std::sync::Mutex<Vec<u8>>,
}

impl MemDevice {
    /// Wraps `data` as a device of its length.
    pub fn new(data: Vec<u8>) -> Self {
        MemDevice {
            data: std::sync::Mutex::new(data),
        }
    }

    /// The current bytes.
    pub fn into_inner(self) -> Vec<u8> {
        self.data.into_inner().unwrap_or_else(|e| e.into_inner())
    }

    fn range(len: usize, off: u64, n: usize) -> Result<std::ops::Range<usize>> {
        match off.checked_add(n as u64) {
            Some(end) if end <= len as u64 => Ok(off as usize..end as usize),
            _ => Err(Error::invalid(format!(
                "access at {off:#x}+{n} beyond the device"
            ))),
        }
    }
}

impl Device for MemDevice {
    fn size(&self) -> u64 {
        self.data.lock().map_or(0, |d| d.len() as u64)
    }
    fn read_at(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        let d = self
            .data
            .lock()
            .map_err(|_| Error::invalid("device lock poisoned"))?;
        let r = Self::range(d.len(), off, buf.len())?;
        buf.copy_from_slice(&d[r]);
        Ok(())
    }
    fn write_at(&self, off: u64, data: &[u8]) -> Result<()> {
        let mut d = self
            .data
            .lock()
            .map_err(|_| Error::invalid("device lock poisoned"))?;
        let r = Self::range(d.len(), off, data.len())?;
        d[r].copy_from_slice(data);
        Ok(())
    }
}

/// An open, writable ext4 filesystem.
pub struct Ext4Writer {
    dev: Box<dyn Device>,
    sb: Superblock,
    groups: Vec<GroupDesc>,
    /// Block bitmaps loaded so far, by group.
    block_bitmaps: HashMap<u32, Vec<u8>>,
    /// Inode bitmaps loaded so far, by group.
    inode_bitmaps: HashMap<u32, Vec<u8>>,
    /// Timestamp for the times we set (seconds, nanoseconds).
    now: (i64, u32),
}

impl Ext4Writer {
    /// Parses the superblock and group descriptors of `dev`, refusing
    /// features we cannot write before anything is written.
    pub fn open(dev: Box<dyn Device>) -> Result<Self> {
        let mut raw = vec![0u8; SB_SIZE];
        if dev.size() < SB_OFFSET + SB_SIZE as u64 {
            return Err(Error::corrupt("device too small for an ext superblock", 0));
        }
        dev.read_at(SB_OFFSET, &mut raw)?;
        let sb = Superblock::parse(&raw, dev.size())?;
        let table_len = u64::from(sb.group_count) * sb.desc_size as u64;
        if sb.desc_offset(0).saturating_add(table_len) > dev.size() {
            return Err(Error::corrupt(
                "group descriptor table extends past the device",
                sb.desc_offset(0),
            ));
        }
        let mut table = vec![0u8; table_len as usize];
        dev.read_at(sb.desc_offset(0), &mut table)?;
        let mut groups = Vec::with_capacity(sb.group_count as usize);
        for g in 0..sb.group_count {
            let at = g as usize * sb.desc_size;
            let gd = GroupDesc::new(table[at..at + sb.desc_size].to_vec());
            if (sb.metadata_csum || sb.gdt_csum) && gd.checksum() != gd.compute_checksum(&sb, g) {
                return Err(Error::corrupt(
                    format!("group {g} descriptor checksum"),
                    sb.desc_offset(g),
                ));
            }
            let itable_blocks = sb.itable_blocks();
            for (what, b, n) in [
                ("block bitmap", gd.block_bitmap(), 1),
                ("inode bitmap", gd.inode_bitmap(), 1),
                ("inode table", gd.inode_table(), itable_blocks),
            ] {
                if b == 0 || b.checked_add(n).is_none_or(|end| end > sb.blocks_count) {
                    return Err(Error::corrupt(
                        format!("group {g} {what} location"),
                        sb.desc_offset(g),
                    ));
                }
            }
            if gd.itable_unused() > sb.inodes_per_group || gd.free_inodes() > sb.inodes_per_group {
                return Err(Error::corrupt(
                    format!("group {g} inode counts"),
                    sb.desc_offset(g),
                ));
            }
            groups.push(gd);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| (d.as_secs() as i64, d.subsec_nanos()))
            .unwrap_or((0, 0));
        Ok(Ext4Writer {
            dev,
            sb,
            groups,
            block_bitmaps: HashMap::new(),
            inode_bitmaps: HashMap::new(),
            now,
        })
    }

    /// Uses `secs` as the time stamped on changed inodes (reproducible output).
    pub fn set_time(&mut self, secs: i64) {
        self.now = (secs, 0);
    }

    /// The parsed superblock.
    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    fn bs(&self) -> u64 {
        self.sb.block_size
    }

    /// Byte offset of inode `ino`'s record.
    fn inode_offset(&self, ino: u32) -> Result<u64> {
        if ino == 0 || ino > self.sb.inodes_count {
            return Err(Error::corrupt(
                format!("inode number {ino} out of range"),
                SB_OFFSET,
            ));
        }
        let g = (ino - 1) / self.sb.inodes_per_group;
        let idx = u64::from((ino - 1) % self.sb.inodes_per_group);
        let table = self.groups[g as usize].inode_table();
        Ok(table * self.bs() + idx * u64::from(self.sb.inode_size))
    }

    /// Reads inode `ino`, verifying its checksum.
    fn read_inode(&self, ino: u32) -> Result<Inode> {
        let at = self.inode_offset(ino)?;
        let mut raw = vec![0u8; self.sb.inode_size as usize];
        self.dev.read_at(at, &mut raw)?;
        let inode = Inode { ino, raw };
        if inode.extra_isize() > self.sb.inode_size as usize - 128 || inode.extra_isize() % 4 != 0 {
            return Err(Error::corrupt(format!("inode {ino} extra size"), at));
        }
        if !inode.checksum_ok(&self.sb) {
            return Err(Error::corrupt(format!("inode {ino} checksum mismatch"), at));
        }
        Ok(inode)
    }

    /// Writes inode `ino` back with a fresh checksum.
    fn write_inode(&self, inode: &Inode) -> Result<()> {
        let at = self.inode_offset(inode.ino)?;
        self.dev.write_at(at, &inode.to_bytes(&self.sb))
    }

    /// Writes group descriptor `g` (primary table only; e2fsck does not
    /// compare the backups' counts).
    fn write_group(&self, g: u32) -> Result<()> {
        let bytes = self.groups[g as usize].to_bytes(&self.sb, g);
        self.dev.write_at(self.sb.desc_offset(g), &bytes)
    }

    /// Writes the primary superblock with a fresh checksum.
    fn write_super(&self) -> Result<()> {
        self.dev.write_at(SB_OFFSET, &self.sb.to_bytes())
    }

    fn read_block(&self, blk: u64) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; self.bs() as usize];
        self.dev.read_at(blk * self.bs(), &mut buf)?;
        Ok(buf)
    }

    fn write_block(&self, blk: u64, data: &[u8]) -> Result<()> {
        self.dev.write_at(blk * self.bs(), data)
    }
}

/// Fuzz entry: `data` is the start of an image (zero-padded to 256 KiB,
/// inputs above 1 MiB ignored); opens it and tries every edit. Errors are
/// fine; panics, hangs and huge allocations are bugs. Returns the edited
/// image when it opened.
pub fn fuzz_edit(data: &[u8]) -> Option<Vec<u8>> {
    if data.len() > 1 << 20 {
        return None;
    }
    let mut image = data.to_vec();
    image.resize(image.len().max(256 << 10), 0);
    let dev = Arc::new(MemDevice::new(image));
    let mut w = Ext4Writer::open(Box::new(dev.clone())).ok()?;
    w.set_time(1_700_000_000);
    let _ = w.read_dir("/");
    for path in ["/", "/lost+found", "/f", "/d/x"] {
        if let Ok(ino) = w.lookup(path) {
            if w.stat(ino).is_ok_and(|s| s.size <= 1 << 20) {
                let _ = w.read_file(ino);
            }
        }
    }
    let _ = w.create_file("/", "new", 0o644, 0, 0, &[7u8; 5000]);
    let _ = w.write_file("/f", &[1u8; 9000]);
    let _ = w.mkdir("/", "dir", 0o755, 0, 0);
    let _ = w.symlink("/dir", "fast", "target", 0, 0);
    let _ = w.symlink("/", "slow", &"s".repeat(100), 0, 0);
    let _ = w.rename("/new", "/dir/renamed");
    let _ = w.rename("/d", "/dir/d");
    let _ = w.chmod("/f", 0o600);
    let _ = w.unlink("/f");
    let _ = w.unlink("/dir/renamed");
    drop(w);
    Arc::try_unwrap(dev).ok().map(MemDevice::into_inner)
}

impl<D: Device + ?Sized> Device for Arc<D> {
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn read_at(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        (**self).read_at(off, buf)
    }
    fn write_at(&self, off: u64, data: &[u8]) -> Result<()> {
        (**self).write_at(off, data)
    }
}
