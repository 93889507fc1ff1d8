//! Positional access to a host file, with errors that name the file.
//!
//! A `HostFile` is either a whole file or a byte range of one (a member of
//! an OVA tar, read in place without extracting it).

use crate::error::{Error, Result};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A read-only host file read with `pread`, never with a shared cursor.
/// Tests and fuzz targets may back it with memory instead of a file.
#[derive(Debug)]
pub struct HostFile {
    backing: Backing,
    path: PathBuf,
    len: u64,
}

#[derive(Debug)]
enum Backing {
    File(File),
    Memory(Vec<u8>),
    /// `len` bytes of `file` starting at `base`: a tar member.
    Range {
        file: File,
        base: u64,
    },
}

impl HostFile {
    /// Opens `path` read-only and learns its length (block devices included).
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        Self::from_file(file, path)
    }

    /// Wraps an already open file.
    pub fn from_file(file: File, path: &Path) -> Result<Self> {
        let len = file_len(&file).map_err(|e| Error::io(format!("sizing {}", path.display()), e))?;
        Ok(HostFile {
            backing: Backing::File(file),
            path: path.to_path_buf(),
            len,
        })
    }

    /// `len` bytes of the file at `path` starting at `offset`, read as a file
    /// of its own named `path!member` (an OVA member read in place).
    /// The range must lie inside the file.
    pub fn open_range(path: &Path, member: &str, offset: u64, len: u64) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        Self::range_of_file(file, path, member, offset, len)
    }

    /// Like [`HostFile::open_range`], over an already open file.
    pub fn range_of_file(file: File, path: &Path, member: &str, offset: u64, len: u64) -> Result<Self> {
        let name = member_path(path, member);
        let whole = file_len(&file).map_err(|e| Error::io(format!("sizing {}", path.display()), e))?;
        if offset.checked_add(len).is_none_or(|end| end > whole) {
            return Err(Error::corrupt(
                format!(
                    "{}: {len} bytes at {offset:#x} lie past the end of {} ({whole} bytes)",
                    name.display(),
                    path.display()
                ),
                offset,
            ));
        }
        Ok(HostFile {
            backing: Backing::Range { file, base: offset },
            path: name,
            len,
        })
    }

    /// An in-memory "file" named `name`, for tests and fuzzing.
    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> Self {
        HostFile {
            len: bytes.len() as u64,
            backing: Backing::Memory(bytes),
            path: PathBuf::from(name),
        }
    }

    /// Length of the file (or device) in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for an empty file.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The path it was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Asks the kernel to start reading `[offset, offset + len)` (clipped to
    /// the file) into the page cache; see [`crate::BlockSource::prefetch`].
    /// Errors are ignored: this is only a hint.
    pub fn prefetch(&self, offset: u64, len: u64) {
        let len = len.min(self.len.saturating_sub(offset));
        if len == 0 {
            return;
        }
        let (file, at) = match &self.backing {
            Backing::File(f) => (f, Some(offset)),
            Backing::Range { file, base } => (file, base.checked_add(offset)),
            Backing::Memory(_) => return,
        };
        if let (Some(at), Some(len)) = (at, std::num::NonZeroU64::new(len)) {
            let _ = rustix::fs::fadvise(file, at, Some(len), rustix::fs::Advice::WillNeed);
        }
    }

    /// The underlying file, for `SEEK_DATA` queries; None when backed by
    /// memory or when this is a range of a larger file (whose holes and
    /// offsets are not this file's).
    pub fn file(&self) -> Option<&File> {
        match &self.backing {
            Backing::File(f) => Some(f),
            Backing::Memory(_) | Backing::Range { .. } => None,
        }
    }

    /// Offset of this file's first byte in its host file when it is a range
    /// ([`HostFile::open_range`]), else None.
    pub fn range_base(&self) -> Option<u64> {
        match &self.backing {
            Backing::Range { base, .. } => Some(*base),
            _ => None,
        }
    }

    /// Reads exactly `buf.len()` bytes at `offset`. A short file is corruption:
    /// a table or data block points past its end.
    pub fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > self.len) {
            return Err(Error::corrupt(
                format!(
                    "{} bytes at {offset:#x} lie past the end of {} ({} bytes)",
                    buf.len(),
                    self.path.display(),
                    self.len
                ),
                offset,
            ));
        }
        match &self.backing {
            Backing::File(f) => f
                .read_exact_at(buf, offset)
                .map_err(|e| Error::io(format!("reading {} at {offset:#x}", self.path.display()), e)),
            Backing::Memory(m) => {
                // In range: checked against len above.
                let start = offset as usize;
                buf.copy_from_slice(&m[start..start + buf.len()]);
                Ok(())
            }
            Backing::Range { file, base } => {
                let at = base.checked_add(offset).ok_or_else(|| {
                    Error::corrupt(
                        format!("{}: offset {offset:#x} overflows", self.path.display()),
                        offset,
                    )
                })?;
                file.read_exact_at(buf, at).map_err(|e| {
                    Error::io(
                        format!(
                            "reading {} at {offset:#x} (host offset {at:#x})",
                            self.path.display()
                        ),
                        e,
                    )
                })
            }
        }
    }

    /// Reads up to `buf.len()` bytes at `offset`, zero-filling what lies past
    /// the end of the file. Used where formats allow a short last block.
    pub fn read_at_zero_fill(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let avail = self.len.saturating_sub(offset).min(buf.len() as u64) as usize;
        let (head, tail) = buf.split_at_mut(avail);
        if !head.is_empty() {
            self.read_exact_at(offset, head)?;
        }
        tail.fill(0);
        Ok(())
    }

    /// Reads a small structure at `offset` into a fresh vector of `len` bytes.
    pub fn read_vec(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut v = vec![0u8; len];
        self.read_exact_at(offset, &mut v)?;
        Ok(v)
    }
}

/// The display name of a member of an archive: `archive!member`.
pub fn member_path(archive: &Path, member: &str) -> PathBuf {
    let mut s = archive.as_os_str().to_os_string();
    s.push("!");
    s.push(member);
    PathBuf::from(s)
}

/// Length of a file or block device: metadata for files, seek-to-end for devices.
fn file_len(file: &File) -> std::io::Result<u64> {
    let meta = file.metadata()?;
    if meta.is_file() {
        return Ok(meta.len());
    }
    use std::io::{Seek, SeekFrom};
    let mut f = file;
    let len = f.seek(SeekFrom::End(0))?;
    f.seek(SeekFrom::Start(0))?;
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn numbered(n: usize) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let bytes: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
        f.write_all(&bytes).unwrap();
        f.flush().unwrap();
        f
    }

    #[test]
    fn range_reads_its_own_bytes_only() {
        let f = numbered(10_000);
        let r = HostFile::open_range(f.path(), "disk1.vmdk", 1000, 500).unwrap();
        assert_eq!(r.len(), 500);
        assert_eq!(r.range_base(), Some(1000));
        assert!(r.file().is_none(), "a range must not expose the whole file");
        let mut b = [0u8; 4];
        r.read_exact_at(0, &mut b).unwrap();
        assert_eq!(
            b,
            [
                (1000 % 251) as u8,
                (1001 % 251) as u8,
                (1002 % 251) as u8,
                (1003 % 251) as u8
            ]
        );
        r.read_exact_at(496, &mut b).unwrap();
        assert_eq!(b[3], (1499 % 251) as u8);
        // One byte past the member is past its end, though the tar goes on.
        let e = r.read_exact_at(497, &mut b).unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("!disk1.vmdk"), "{e}");
        let e = r.read_exact_at(u64::MAX - 1, &mut b).unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        // Zero-fill stops at the member's end, not the tar's.
        let mut z = [9u8; 8];
        r.read_at_zero_fill(496, &mut z).unwrap();
        assert_eq!(&z[4..], &[0, 0, 0, 0]);
    }

    #[test]
    fn range_names_archive_and_member() {
        let f = numbered(100);
        let r = HostFile::open_range(f.path(), "a.vmdk", 0, 100).unwrap();
        let want = format!("{}!a.vmdk", f.path().display());
        assert_eq!(r.path().display().to_string(), want);
        assert_eq!(HostFile::open(f.path()).unwrap().range_base(), None);
    }

    #[test]
    fn range_past_the_file_is_refused() {
        let f = numbered(100);
        for (off, len) in [(0, 101), (100, 1), (u64::MAX, 2), (50, u64::MAX)] {
            let e = HostFile::open_range(f.path(), "m", off, len).unwrap_err();
            assert!(matches!(e, Error::Corrupt { .. }), "{off}+{len}: {e}");
        }
        // An empty member at the very end is fine.
        assert!(HostFile::open_range(f.path(), "m", 100, 0).unwrap().is_empty());
        let e = HostFile::open_range(Path::new("/nonexistent/x.ova"), "m", 0, 0).unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e}");
    }

    /// A file with `pad` bytes of junk, then `member`, then more junk.
    fn embedded(member: &[u8], pad: usize) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&vec![0xa5; pad]).unwrap();
        f.write_all(member).unwrap();
        f.write_all(&vec![0x5a; 4096]).unwrap();
        f.flush().unwrap();
        f
    }

    #[test]
    fn raw_member_file_opens_through_the_opener() {
        use crate::block::{BlockSource, ExtentKind};
        let disk: Vec<u8> = (0..65536u32).map(|i| (i * 7 % 256) as u8).collect();
        let f = embedded(&disk, 1536);
        let r = HostFile::open_range(f.path(), "disk.img", 1536, disk.len() as u64).unwrap();
        let img = crate::open::open_member(r, &crate::open::OpenOptions::default()).unwrap();
        assert_eq!(img.size(), disk.len() as u64);
        let mut buf = vec![0u8; disk.len()];
        img.read_at(0, &mut buf).unwrap();
        assert_eq!(buf, disk);
        // No SEEK_DATA on a range: the member maps as data, exactly its length.
        let map = img.map(0, img.size()).unwrap();
        assert_eq!(map.len(), 1, "{map:?}");
        assert_eq!(
            (map[0].start, map[0].len, map[0].kind),
            (0, 65536, ExtentKind::Data)
        );
        assert!(img.info().path.ends_with("!disk.img"));
    }

    #[test]
    fn descriptor_member_file_is_unsupported() {
        let text = b"# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n\
createType=\"monolithicFlat\"\n\nRW 2048 FLAT \"other-member-flat.vmdk\" 0\n";
        let f = embedded(text, 512);
        let r = HostFile::open_range(f.path(), "disk1.vmdk", 512, text.len() as u64).unwrap();
        let Err(e) = crate::open::open_member(r, &crate::open::OpenOptions::default()) else {
            panic!("a descriptor member opened");
        };
        assert!(matches!(e, Error::Unsupported(_)), "{e}");
        assert!(e.to_string().contains("!disk1.vmdk"), "{e}");
    }
}
