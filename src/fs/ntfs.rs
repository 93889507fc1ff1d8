//! NTFS through the `ntfs` crate, read-only.
//!
//! The crate's [`ntfs::Ntfs`] holds no reader, so [`NtfsFs`] keeps it (with
//! the $UpCase table loaded) and makes a fresh [`SourceCursor`] per operation.
//! Lookups are exact first, then case-insensitive through $UpCase (Windows
//! semantics). Symlink and junction reparse points are reported as symlinks;
//! their target drops the `\??\` prefix and the drive letter and uses `/`,
//! so it resolves inside this volume.

use super::cursor::{SourceCursor, BUDGET_EXHAUSTED};
use super::{DirEntry, FileType, Filesystem, FsKind, Metadata, MAX_DIR_ENTRIES, MAX_LINK_LEN};
use ntfs::indexes::NtfsFileNameIndex;
use ntfs::structured_values::{NtfsFileAttributeFlags, NtfsFileNamespace, NtfsVolumeFlags};
use ntfs::{Ntfs, NtfsAttributeFlags, NtfsAttributeType, NtfsError, NtfsFile, NtfsReadSeek};
use std::io::SeekFrom;
use std::sync::Arc;
use v2x_formats::block::BlockSource;
use v2x_formats::error::check_limit;
use v2x_formats::{Error, Result};

/// Largest single `read_range` request (one allocation).
pub const MAX_READ_RANGE: u64 = super::MAX_FILE_READ;

/// Largest reparse point value we read (the NTFS limit is 16 KiB).
pub const MAX_REPARSE_LEN: u64 = 16 * 1024;

/// Extra bytes one operation may read beyond three times the volume size.
const BUDGET_SLACK: u64 = 1 << 20;

/// File records below this number are NTFS metadata files ($MFT, $Volume,
/// the root's own "." entry, ...), hidden from listings as Windows does.
const FIRST_USER_RECORD: u64 = 16;

const TAG_MOUNT_POINT: u32 = 0xA000_0003;
const TAG_SYMLINK: u32 = 0xA000_000C;
const SYMLINK_RELATIVE: u32 = 1;

/// An NTFS volume, read-only.
pub struct NtfsFs {
    source: Arc<dyn BlockSource>,
    ntfs: Ntfs,
    budget: u64,
    label: Option<String>,
    dirty: bool,
}

/// Translates an `ntfs` crate error into ours, keeping our own errors intact.
fn map_err(e: NtfsError, path: &str) -> Error {
    match e {
        NtfsError::Io(io) => {
            let text = io.to_string();
            match io.into_inner().map(|inner| inner.downcast::<Error>()) {
                Some(Ok(ours)) => *ours,
                _ if text == BUDGET_EXHAUSTED => Error::corrupt(format!("NTFS ({path}): {text}"), 0),
                _ => Error::corrupt(format!("NTFS ({path}): {text}"), 0),
            }
        }
        NtfsError::NotADirectory { .. } => {
            Error::not_found(format!("{path}: a component is not a directory"))
        }
        other => {
            // Most crate errors carry the byte position of the bad structure.
            let text = other.to_string();
            let offset = position_in(&text).unwrap_or(0);
            Error::corrupt(format!("NTFS ({path}): {text}"), offset)
        }
    }
}

/// The first hexadecimal byte position ("0x1234") in an `ntfs` error message.
fn position_in(text: &str) -> Option<u64> {
    let start = text.find("0x")? + 2;
    let hex: String = text[start..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    u64::from_str_radix(&hex, 16).ok()
}

impl NtfsFs {
    /// Opens the NTFS volume on `source`: boot sector, $UpCase, $Volume.
    pub fn open(source: Arc<dyn BlockSource>) -> Result<Self> {
        let budget = source.size().saturating_mul(3).saturating_add(BUDGET_SLACK);
        let mut c = SourceCursor::new(source.clone(), budget);
        let mut ntfs = Ntfs::new(&mut c).map_err(|e| map_err(e, "boot sector"))?;
        ntfs.read_upcase_table(&mut c)
            .map_err(|e| map_err(e, "$UpCase"))?;
        let label = match ntfs.volume_name(&mut c) {
            Some(name) => Some(name.map_err(|e| map_err(e, "$Volume"))?.name().to_string_lossy()),
            None => None,
        }
        .filter(|l| !l.is_empty());
        let info = ntfs.volume_info(&mut c).map_err(|e| map_err(e, "$Volume"))?;
        let dirty = info.flags().contains(NtfsVolumeFlags::IS_DIRTY);
        Ok(Self {
            source,
            ntfs,
            budget,
            label,
            dirty,
        })
    }

    fn cursor(&self) -> SourceCursor {
        SourceCursor::new(self.source.clone(), self.budget)
    }

    /// The file record at a physical path.
    fn find<'n>(&'n self, c: &mut SourceCursor, path: &str) -> Result<NtfsFile<'n>> {
        let me = |e| map_err(e, path);
        let mut file = self.ntfs.root_directory(c).map_err(me)?;
        for comp in path.split('/').filter(|s| !s.is_empty()) {
            let next = {
                let index = file.directory_index(c).map_err(me)?;
                let mut finder = index.finder();
                let hit = NtfsFileNameIndex::find(&mut finder, &self.ntfs, c, comp)
                    .ok_or_else(|| Error::not_found(format!("{path} on NTFS")))?
                    .map_err(me)?;
                let key = hit
                    .key()
                    .ok_or_else(|| Error::corrupt("NTFS index entry without a key", 0))?;
                if key.map_err(me)?.name().to_string_lossy() == comp {
                    hit.to_file(&self.ntfs, c).map_err(me)?
                } else {
                    // Case differs: a case-sensitive (POSIX) twin may match exactly.
                    let folded = hit.file_reference();
                    match self.exact_entry(c, &file, comp, path)? {
                        Some(f) => f,
                        None => folded.to_file(&self.ntfs, c).map_err(me)?,
                    }
                }
            };
            file = next;
        }
        Ok(file)
    }

    /// Scans `dir` for an entry named exactly `name`.
    fn exact_entry<'n>(
        &'n self,
        c: &mut SourceCursor,
        dir: &NtfsFile<'n>,
        name: &str,
        path: &str,
    ) -> Result<Option<NtfsFile<'n>>> {
        let me = |e| map_err(e, path);
        let index = dir.directory_index(c).map_err(me)?;
        let mut entries = index.entries();
        let mut n = 0u64;
        while let Some(entry) = entries.next(c) {
            n += 1;
            check_limit("directory entries", n, MAX_DIR_ENTRIES as u64)?;
            let entry = entry.map_err(me)?;
            let Some(key) = entry.key() else { continue };
            if key.map_err(me)?.name().to_string_lossy() == name {
                return Ok(Some(entry.to_file(&self.ntfs, c).map_err(me)?));
            }
        }
        Ok(None)
    }

    /// The reparse tag and raw reparse data of `file`, if it is a reparse point.
    fn reparse(&self, c: &mut SourceCursor, file: &NtfsFile<'_>, path: &str) -> Result<Option<Vec<u8>>> {
        let me = |e| map_err(e, path);
        let attrs = file.info().map_err(me)?.file_attributes();
        if !attrs.contains(NtfsFileAttributeFlags::REPARSE_POINT) {
            return Ok(None);
        }
        let mut iter = file.attributes();
        while let Some(item) = iter.next(c) {
            let item = item.map_err(me)?;
            let attr = item.to_attribute().map_err(me)?;
            if attr.ty().map_err(me)? != NtfsAttributeType::ReparsePoint {
                continue;
            }
            let len = attr.value_length();
            check_limit("NTFS reparse point length", len, MAX_REPARSE_LEN)?;
            let mut value = attr.value(c).map_err(me)?;
            let mut buf = vec![0u8; len as usize];
            value.read_exact(c, &mut buf).map_err(me)?;
            return Ok(Some(buf));
        }
        Err(Error::corrupt(
            format!("{path} is flagged as a reparse point but has no $REPARSE_POINT"),
            file.position().value().map_or(0, |p| p.get()),
        ))
    }

    /// Type and (for symlinks) target of `file`.
    fn classify(
        &self,
        c: &mut SourceCursor,
        file: &NtfsFile<'_>,
        path: &str,
    ) -> Result<(FileType, Option<String>)> {
        if let Some(data) = self.reparse(c, file, path)? {
            return Ok(match link_target(&data) {
                Some(t) => (FileType::Symlink, Some(t)),
                None => (FileType::Other, None),
            });
        }
        Ok((
            if file.is_directory() {
                FileType::Dir
            } else {
                FileType::File
            },
            None,
        ))
    }
}

fn le16(b: &[u8], off: usize) -> Option<usize> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?) as usize)
}

/// Parses a symlink or junction reparse buffer into a `/`-separated target.
/// Returns `None` for other tags or a malformed buffer.
pub fn link_target(data: &[u8]) -> Option<String> {
    let tag = u32::from_le_bytes(data.get(0..4)?.try_into().ok()?);
    let (buffer, relative): (usize, bool) = match tag {
        TAG_SYMLINK => {
            let flags = u32::from_le_bytes(data.get(16..20)?.try_into().ok()?);
            (20, flags & SYMLINK_RELATIVE != 0)
        }
        TAG_MOUNT_POINT => (16, false),
        _ => return None,
    };
    let utf16 = |off: usize, len: usize| -> Option<String> {
        let start = buffer.checked_add(off)?;
        let bytes = data.get(start..start.checked_add(len)?)?;
        let units: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|p| u16::from_le_bytes([p[0], p[1]]))
            .collect();
        Some(String::from_utf16_lossy(&units))
    };
    let print = utf16(le16(data, 12)?, le16(data, 14)?)?;
    let target = if print.is_empty() {
        utf16(le16(data, 8)?, le16(data, 10)?)?
    } else {
        print
    };
    let mut t = target.strip_prefix("\\??\\").unwrap_or(&target).to_string();
    if !relative {
        let b = t.as_bytes();
        if b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' {
            t = t[2..].to_string();
        }
        if !t.starts_with('\\') {
            t.insert(0, '\\');
        }
    }
    let t = t.replace('\\', "/");
    (!t.is_empty() && t.len() as u64 <= MAX_LINK_LEN).then_some(t)
}

impl Filesystem for NtfsFs {
    fn kind(&self) -> FsKind {
        FsKind::Ntfs
    }

    fn kind_name(&self) -> &'static str {
        "ntfs"
    }

    fn label(&self) -> Option<String> {
        self.label.clone()
    }

    fn uuid(&self) -> Option<String> {
        Some(format!("{:016X}", self.ntfs.serial_number()))
    }

    fn lstat(&self, path: &str) -> Result<Metadata> {
        let mut c = self.cursor();
        let file = self.find(&mut c, path)?;
        let (file_type, target) = self.classify(&mut c, &file, path)?;
        let size = match file_type {
            FileType::File => match file.data(&mut c, "") {
                Some(item) => {
                    let item = item.map_err(|e| map_err(e, path))?;
                    item.to_attribute().map_err(|e| map_err(e, path))?.value_length()
                }
                None => 0,
            },
            FileType::Symlink => target.map_or(0, |t| t.len() as u64),
            _ => 0,
        };
        Ok(Metadata {
            file_type,
            size,
            mode: None,
            uid: None,
            gid: None,
            ino: Some(file.file_record_number()),
        })
    }

    fn read_dir(&self, path: &str) -> Result<Vec<DirEntry>> {
        let mut c = self.cursor();
        let me = |e| map_err(e, path);
        let dir = self.find(&mut c, path)?;
        if !dir.is_directory() {
            return Err(Error::invalid(format!("{path} is not a directory")));
        }
        let index = dir.directory_index(&mut c).map_err(me)?;
        let mut entries = index.entries();
        let mut out = Vec::new();
        let mut seen = 0u64;
        while let Some(entry) = entries.next(&mut c) {
            seen += 1;
            check_limit("directory entries", seen, MAX_DIR_ENTRIES as u64)?;
            let entry = entry.map_err(me)?;
            let Some(key) = entry.key() else { continue };
            let name = key.map_err(me)?;
            if name.namespace() == NtfsFileNamespace::Dos
                || entry.file_reference().file_record_number() < FIRST_USER_RECORD
            {
                continue;
            }
            let attrs = name.file_attributes();
            let file_type = if attrs.contains(NtfsFileAttributeFlags::REPARSE_POINT) {
                let file = entry.to_file(&self.ntfs, &mut c).map_err(me)?;
                self.classify(&mut c, &file, path)?.0
            } else if name.is_directory() {
                FileType::Dir
            } else {
                FileType::File
            };
            out.push(DirEntry {
                name: name.name().to_string_lossy(),
                file_type,
            });
        }
        Ok(out)
    }

    fn read_range(&self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut c = self.cursor();
        let me = |e| map_err(e, path);
        let file = self.find(&mut c, path)?;
        if self.classify(&mut c, &file, path)?.0 != FileType::File {
            return Err(Error::invalid(format!("{path} is not a regular file")));
        }
        let Some(item) = file.data(&mut c, "") else {
            return Ok(Vec::new());
        };
        let item = item.map_err(me)?;
        let attr = item.to_attribute().map_err(me)?;
        if attr
            .flags()
            .intersects(NtfsAttributeFlags::COMPRESSED | NtfsAttributeFlags::ENCRYPTED)
        {
            return Err(Error::unsupported(format!(
                "{path} is NTFS-compressed or encrypted"
            )));
        }
        let size = attr.value_length();
        let want = len.min(size.saturating_sub(offset));
        check_limit("read_range length", want, MAX_READ_RANGE)?;
        let mut buf = vec![0u8; want as usize];
        if want == 0 {
            return Ok(buf);
        }
        let mut value = attr.value(&mut c).map_err(me)?;
        value.seek(&mut c, SeekFrom::Start(offset)).map_err(me)?;
        value.read_exact(&mut c, &mut buf).map_err(me)?;
        Ok(buf)
    }

    fn read_link(&self, path: &str) -> Result<String> {
        let mut c = self.cursor();
        let file = self.find(&mut c, path)?;
        match self.classify(&mut c, &file, path)? {
            (FileType::Symlink, Some(t)) => Ok(t),
            _ => Err(Error::invalid(format!("{path} is not a symlink or junction"))),
        }
    }

    fn notes(&self) -> Vec<String> {
        if self.dirty {
            vec![
                "NTFS volume dirty flag is set (Windows did not shut down cleanly or chkdsk is pending)"
                    .into(),
            ]
        } else {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reparse(tag: u32, flags: Option<u32>, subst: &str, print: &str) -> Vec<u8> {
        let s: Vec<u8> = subst.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let p: Vec<u8> = print.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let mut body = Vec::new();
        for v in [0, s.len(), s.len(), p.len()] {
            body.extend_from_slice(&(v as u16).to_le_bytes());
        }
        if let Some(f) = flags {
            body.extend_from_slice(&f.to_le_bytes());
        }
        body.extend_from_slice(&s);
        body.extend_from_slice(&p);
        let mut out = tag.to_le_bytes().to_vec();
        out.extend_from_slice(&(body.len() as u16).to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn junction_target_drops_prefix_and_drive() {
        let r = reparse(
            TAG_MOUNT_POINT,
            None,
            "\\??\\C:\\Users\\Public",
            "C:\\Users\\Public",
        );
        assert_eq!(link_target(&r).as_deref(), Some("/Users/Public"));
    }

    #[test]
    fn relative_symlink_keeps_relative() {
        let r = reparse(TAG_SYMLINK, Some(SYMLINK_RELATIVE), "..\\x", "..\\x");
        assert_eq!(link_target(&r).as_deref(), Some("../x"));
    }

    #[test]
    fn other_tags_and_truncated_buffers_are_not_links() {
        let r = reparse(0x8000_0017, None, "a", "a");
        assert_eq!(link_target(&r), None);
        let r = reparse(TAG_SYMLINK, Some(0), "\\a\\b", "\\a\\b");
        for cut in 0..r.len() {
            let _ = link_target(&r[..cut]);
        }
    }
}
