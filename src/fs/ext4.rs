//! ext2/3/4 through the `ext4-view` crate.
//!
//! `ext4-view` keeps its state behind an `Rc` (it is neither `Send` nor
//! `Sync`), while a [`Filesystem`] is shared between threads. So [`ExtFs`]
//! holds only the block source and the facts read from the superblock, and
//! each thread keeps its own loaded `Ext4` in a small thread-local cache,
//! keyed by the filesystem's identity and dropped once the `ExtFs` is gone
//! (on that thread's next access: until then the handle keeps the source open).
//!
//! A journal that needs recovery is replayed by `ext4-view` in memory
//! (committed transactions are overlaid on reads; the image is unchanged);
//! [`Filesystem::notes`] says so.

use super::{DirEntry, FileType, Filesystem, FsKind, Metadata, MAX_DIR_ENTRIES, MAX_LINK_LEN};
use ext4_view::{Ext4, Ext4Error, Ext4Read};
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use v2x_formats::block::BlockSource;
use v2x_formats::error::check_limit;
use v2x_formats::{Error, Result};

/// Byte offset of the ext superblock.
const SUPERBLOCK: u64 = 1024;
/// Bytes of the superblock we parse ourselves.
const SUPERBLOCK_LEN: usize = 1024;
/// ext magic number (`s_magic`, offset 0x38 in the superblock).
const EXT_MAGIC: u16 = 0xEF53;

/// Most block groups we accept (2^24 groups of 128 MiB is 2 PiB); ext4-view
/// allocates one descriptor per group before reading them.
pub const MAX_BLOCK_GROUPS: u64 = 1 << 24;

/// Most filesystems one thread keeps loaded at once.
const MAX_CACHED_PER_THREAD: usize = 8;

/// Largest single `read_range` request (one allocation).
pub const MAX_READ_RANGE: u64 = super::MAX_FILE_READ;

const COMPAT_HAS_JOURNAL: u32 = 0x4;
const INCOMPAT_FILETYPE: u32 = 0x2;
const INCOMPAT_RECOVER: u32 = 0x4;
const INCOMPAT_META_BG: u32 = 0x10;
const RO_COMPAT_EXT2_SUPP: u32 = 0x1 | 0x2 | 0x4; // sparse_super, large_file, btree_dir
const STATE_VALID: u16 = 0x1;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's loaded filesystems: (ExtFs id, liveness token, handle).
    static LOADED: RefCell<Vec<(u64, Weak<()>, Ext4)>> = const { RefCell::new(Vec::new()) };
}

/// Facts from the ext superblock that `ext4-view` does not expose.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SuperFacts {
    kind_name: &'static str,
    label: Option<String>,
    uuid: Option<String>,
    needs_recovery: bool,
    unclean: bool,
}

fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Parses the superblock fields blkid reports. `sb` is the 1024-byte superblock.
fn parse_superblock(sb: &[u8]) -> Result<SuperFacts> {
    if le16(sb, 0x38) != EXT_MAGIC {
        return Err(Error::corrupt(
            "ext superblock magic is not 0xEF53",
            SUPERBLOCK + 0x38,
        ));
    }
    let compat = le32(sb, 0x5C);
    let incompat = le32(sb, 0x60);
    let ro_compat = le32(sb, 0x64);
    let has_journal = compat & COMPAT_HAS_JOURNAL != 0;
    // blkid's rule: ext2/ext3 only if no feature beyond what those drivers knew.
    let ro_old = ro_compat & !RO_COMPAT_EXT2_SUPP == 0;
    let kind_name = if !has_journal && ro_old && incompat & !(INCOMPAT_FILETYPE | INCOMPAT_META_BG) == 0 {
        "ext2"
    } else if has_journal
        && ro_old
        && incompat & !(INCOMPAT_FILETYPE | INCOMPAT_RECOVER | INCOMPAT_META_BG) == 0
    {
        "ext3"
    } else {
        "ext4"
    };
    let label_bytes = &sb[0x78..0x88];
    let end = label_bytes
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(label_bytes.len());
    let label = (end > 0).then(|| String::from_utf8_lossy(&label_bytes[..end]).into_owned());
    let u = &sb[0x68..0x78];
    let uuid = u.iter().any(|&b| b != 0).then(|| {
        let h: Vec<String> = u.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            h[0..4].concat(),
            h[4..6].concat(),
            h[6..8].concat(),
            h[8..10].concat(),
            h[10..16].concat()
        )
    });
    Ok(SuperFacts {
        kind_name,
        label,
        uuid,
        needs_recovery: has_journal && incompat & INCOMPAT_RECOVER != 0,
        unclean: le16(sb, 0x3A) & STATE_VALID == 0,
    })
}

/// Checks that the block group descriptor table the superblock describes
/// is of a sane size and fits on the volume, before ext4-view allocates it.
fn check_group_table(sb: &[u8], volume_size: u64) -> Result<()> {
    let log = le32(sb, 0x18);
    if log > 6 {
        return Err(Error::corrupt(
            format!("ext block size 2^(10+{log}) is impossible"),
            SUPERBLOCK + 0x18,
        ));
    }
    let per_group = u64::from(le32(sb, 0x20));
    if per_group == 0 {
        return Err(Error::corrupt(
            "ext s_blocks_per_group is zero",
            SUPERBLOCK + 0x20,
        ));
    }
    // ext4-view reads s_blocks_count_hi whether or not the fs is 64-bit.
    let blocks = u64::from(le32(sb, 0x04)) | u64::from(le32(sb, 0x150)) << 32;
    let desc = if le32(sb, 0x60) & 0x80 != 0 {
        u64::from(le16(sb, 0xFE)).max(32)
    } else {
        32
    };
    let first = u64::from(le32(sb, 0x14));
    let groups = blocks.saturating_sub(first).div_ceil(per_group);
    check_limit("ext block groups", groups, MAX_BLOCK_GROUPS)?;
    if groups * desc > volume_size {
        return Err(Error::corrupt(
            format!("ext group descriptor table ({groups} groups) is larger than the volume"),
            SUPERBLOCK + 0x04,
        ));
    }
    Ok(())
}

/// Adapts a [`BlockSource`] to `ext4-view`'s reader trait.
struct SourceReader(Arc<dyn BlockSource>);

impl Ext4Read for SourceReader {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        self.0.read_at(start_byte, dst).map_err(|e| Box::new(e) as _)
    }
}

/// An ext2/3/4 filesystem, read-only.
pub struct ExtFs {
    source: Arc<dyn BlockSource>,
    id: u64,
    alive: Arc<()>,
    facts: SuperFacts,
}

impl ExtFs {
    /// Opens the ext filesystem on `source`, validating the superblock, group
    /// descriptors and journal.
    pub fn open(source: Arc<dyn BlockSource>) -> Result<Self> {
        let end = SUPERBLOCK + SUPERBLOCK_LEN as u64;
        if source.size() < end {
            return Err(Error::corrupt(
                format!(
                    "volume of {} bytes is too small for an ext superblock",
                    source.size()
                ),
                SUPERBLOCK,
            ));
        }
        let mut sb = vec![0u8; SUPERBLOCK_LEN];
        source.read_at(SUPERBLOCK, &mut sb)?;
        let facts = parse_superblock(&sb)?;
        check_group_table(&sb, source.size())?;
        let fs = Self {
            source,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            alive: Arc::new(()),
            facts,
        };
        // Load once now so a damaged filesystem fails at open, not later.
        match fs.with(|_| Ok(()), "/") {
            Err(Error::Unsupported(why)) if fs.facts.needs_recovery => Err(Error::unsupported(format!(
                "{} journal needs recovery and ext4-view cannot replay it in memory ({why}); \
                 replay it with e2fsck on a copy of the image",
                fs.facts.kind_name
            ))),
            Err(e) => Err(e),
            Ok(()) => Ok(fs),
        }
    }

    /// Runs `f` with this thread's loaded `Ext4`, loading it if needed.
    fn with<T>(&self, f: impl FnOnce(&Ext4) -> std::result::Result<T, Ext4Error>, path: &str) -> Result<T> {
        let cached = LOADED.with(|cell| {
            let mut v = cell.borrow_mut();
            v.retain(|(_, w, _)| w.strong_count() > 0);
            v.iter()
                .find(|(id, _, _)| *id == self.id)
                .map(|(_, _, fs)| fs.clone())
        });
        let fs = match cached {
            Some(fs) => fs,
            None => {
                let fs = Ext4::load(Box::new(SourceReader(self.source.clone())))
                    .map_err(|e| map_err(e, "opening the filesystem"))?;
                LOADED.with(|cell| {
                    let mut v = cell.borrow_mut();
                    if v.len() >= MAX_CACHED_PER_THREAD {
                        v.remove(0);
                    }
                    v.push((self.id, Arc::downgrade(&self.alive), fs.clone()));
                });
                fs
            }
        };
        f(&fs).map_err(|e| map_err(e, path))
    }
}

/// Translates an `ext4-view` error into ours, naming the path.
fn map_err(e: Ext4Error, path: &str) -> Error {
    match e {
        Ext4Error::NotFound => Error::not_found(format!("{path} on ext filesystem")),
        Ext4Error::Io(inner) => match inner.downcast::<Error>() {
            Ok(ours) => *ours,
            Err(other) => Error::io(
                format!("reading ext filesystem ({path})"),
                std::io::Error::other(other),
            ),
        },
        Ext4Error::Incompatible(i) => Error::unsupported(format!("ext filesystem: {i}")),
        Ext4Error::Encrypted => Error::unsupported(format!("{path} is encrypted (ext4 fscrypt)")),
        // ext4-view does not say where the damage is; the superblock is the
        // root of every structure it walks.
        Ext4Error::Corrupt(c) => Error::corrupt(format!("ext filesystem ({path}): {c}"), SUPERBLOCK),
        Ext4Error::FileTooLarge => Error::unsupported(format!("{path} is too large to read")),
        other => Error::invalid(format!("{path}: {other}")),
    }
}

fn file_type(t: ext4_view::FileType) -> FileType {
    if t.is_regular_file() {
        FileType::File
    } else if t.is_dir() {
        FileType::Dir
    } else if t.is_symlink() {
        FileType::Symlink
    } else {
        FileType::Other
    }
}

/// The `S_IFMT` bits of a file type (`ext4-view` only reports permission bits).
fn type_bits(t: ext4_view::FileType) -> u32 {
    if t.is_regular_file() {
        0o100000
    } else if t.is_dir() {
        0o040000
    } else if t.is_symlink() {
        0o120000
    } else if t.is_block_dev() {
        0o060000
    } else if t.is_char_dev() {
        0o020000
    } else if t.is_fifo() {
        0o010000
    } else {
        0o140000
    }
}

impl Filesystem for ExtFs {
    fn kind(&self) -> FsKind {
        FsKind::Ext
    }

    fn kind_name(&self) -> &'static str {
        self.facts.kind_name
    }

    fn label(&self) -> Option<String> {
        self.facts.label.clone()
    }

    fn uuid(&self) -> Option<String> {
        self.facts.uuid.clone()
    }

    fn lstat(&self, path: &str) -> Result<Metadata> {
        let m = self.with(|fs| fs.symlink_metadata(path), path)?;
        let t = m.file_type();
        Ok(Metadata {
            file_type: file_type(t),
            size: m.len(),
            mode: Some(type_bits(t) | u32::from(m.mode())),
            uid: Some(m.uid()),
            gid: Some(m.gid()),
            ino: None,
        })
    }

    fn read_dir(&self, path: &str) -> Result<Vec<DirEntry>> {
        self.with(
            |fs| {
                let mut out = Vec::new();
                for e in fs.read_dir(path)? {
                    let e = e?;
                    let name = e.file_name();
                    let name = name.as_ref();
                    if name == b"." || name == b".." {
                        continue;
                    }
                    if out.len() >= MAX_DIR_ENTRIES {
                        return Ok(Err(Error::LimitExceeded {
                            what: "directory entries",
                            value: out.len() as u64 + 1,
                            max: MAX_DIR_ENTRIES as u64,
                        }));
                    }
                    out.push(DirEntry {
                        name: String::from_utf8_lossy(name).into_owned(),
                        file_type: file_type(e.file_type()?),
                    });
                }
                Ok(Ok(out))
            },
            path,
        )?
    }

    fn read_range(&self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.with(
            |fs| {
                let t = fs.symlink_metadata(path)?.file_type();
                if !t.is_regular_file() {
                    return Ok(Err(Error::invalid(format!("{path} is not a regular file"))));
                }
                let mut file = fs.open(path)?;
                let size = file.metadata().len();
                let want = len.min(size.saturating_sub(offset));
                if let Err(e) = check_limit("read_range length", want, MAX_READ_RANGE) {
                    return Ok(Err(e));
                }
                let mut buf = vec![0u8; want as usize];
                if want == 0 {
                    return Ok(Ok(buf));
                }
                file.seek_to(offset)?;
                let mut done = 0;
                while done < buf.len() {
                    let n = file.read_bytes(&mut buf[done..])?;
                    if n == 0 {
                        break;
                    }
                    done += n;
                }
                buf.truncate(done);
                Ok(Ok(buf))
            },
            path,
        )?
    }

    fn read_link(&self, path: &str) -> Result<String> {
        // ext4-view allocates the inode's size for a slow link: check it first.
        let len = self.with(|fs| fs.symlink_metadata(path), path)?.len();
        check_limit("symlink target length", len, MAX_LINK_LEN)?;
        let target = self.with(|fs| fs.read_link(path), path)?;
        let bytes = target.as_ref();
        check_limit("symlink target length", bytes.len() as u64, MAX_LINK_LEN)?;
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }

    fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if self.facts.needs_recovery {
            notes.push(format!(
                "{} journal needed recovery; it was replayed in memory (the image is unchanged)",
                self.facts.kind_name
            ));
        } else if self.facts.unclean {
            notes.push(format!("{} was not cleanly unmounted", self.facts.kind_name));
        }
        notes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sb() -> Vec<u8> {
        let mut sb = vec![0u8; SUPERBLOCK_LEN];
        sb[0x38..0x3A].copy_from_slice(&EXT_MAGIC.to_le_bytes());
        sb[0x3A..0x3C].copy_from_slice(&STATE_VALID.to_le_bytes());
        sb
    }

    fn set32(sb: &mut [u8], off: usize, v: u32) {
        sb[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }

    #[test]
    fn kind_follows_blkid_feature_rules() {
        let mut s = sb();
        set32(&mut s, 0x60, INCOMPAT_FILETYPE);
        assert_eq!(parse_superblock(&s).unwrap().kind_name, "ext2");
        set32(&mut s, 0x5C, COMPAT_HAS_JOURNAL);
        assert_eq!(parse_superblock(&s).unwrap().kind_name, "ext3");
        set32(&mut s, 0x60, INCOMPAT_FILETYPE | 0x40); // extents
        assert_eq!(parse_superblock(&s).unwrap().kind_name, "ext4");
        set32(&mut s, 0x60, INCOMPAT_FILETYPE);
        set32(&mut s, 0x64, 0x8); // huge_file
        assert_eq!(parse_superblock(&s).unwrap().kind_name, "ext4");
    }

    #[test]
    fn recovery_flag_and_state_become_notes() {
        let mut s = sb();
        set32(&mut s, 0x5C, COMPAT_HAS_JOURNAL);
        set32(&mut s, 0x60, INCOMPAT_RECOVER);
        s[0x3A] = 0;
        let f = parse_superblock(&s).unwrap();
        assert!(f.needs_recovery && f.unclean);
    }

    #[test]
    fn block_group_count_is_capped_and_must_fit() {
        let mut s = sb();
        set32(&mut s, 0x20, 1);
        set32(&mut s, 0x04, u32::MAX);
        assert!(matches!(
            check_group_table(&s, u64::MAX),
            Err(Error::LimitExceeded { .. })
        ));
        set32(&mut s, 0x20, 8192);
        assert!(matches!(
            check_group_table(&s, 1 << 20),
            Err(Error::Corrupt { .. })
        ));
        assert!(check_group_table(&s, 1 << 40).is_ok());
        set32(&mut s, 0x20, 0);
        assert!(matches!(
            check_group_table(&s, 1 << 40),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn bad_magic_is_corrupt_at_its_offset() {
        let mut s = sb();
        s[0x38] = 0;
        match parse_superblock(&s) {
            Err(Error::Corrupt { offset, .. }) => assert_eq!(offset, 0x438),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn uuid_and_label_in_blkid_form() {
        let mut s = sb();
        s[0x68..0x78].copy_from_slice(&[
            0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
        ]);
        s[0x78..0x7D].copy_from_slice(b"root\0");
        let f = parse_superblock(&s).unwrap();
        assert_eq!(f.uuid.as_deref(), Some("12345678-9abc-def0-0123-456789abcdef"));
        assert_eq!(f.label.as_deref(), Some("root"));
    }
}
