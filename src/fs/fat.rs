//! FAT12/16/32 (EFI system partitions) through the `fatfs` crate, read-only.
//!
//! `fatfs` keeps its state in `RefCell`s, so [`FatFs`] opens a fresh
//! `fatfs::FileSystem` over a [`SourceCursor`] per operation (that reads only
//! the boot sector and, on FAT32, the FSInfo sector). Writes through the
//! cursor fail. The cursor's read budget bounds walks of cyclic cluster
//! chains, which `fatfs` itself does not detect.

use super::cursor::{SourceCursor, BUDGET_EXHAUSTED};
use super::{DirEntry, FileType, Filesystem, FsKind, Metadata, MAX_DIR_ENTRIES};
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;
use v2x_formats::block::BlockSource;
use v2x_formats::error::check_limit;
use v2x_formats::{Error, Result};

type Fs = fatfs::FileSystem<SourceCursor>;
type Entry<'a> = fatfs::DirEntry<'a, SourceCursor>;

/// Largest single `read_range` request (one allocation).
pub const MAX_READ_RANGE: u64 = super::MAX_FILE_READ;

/// Extra bytes one operation may read beyond three times the volume size
/// (file data, its FAT entries and directories are each read about once).
const BUDGET_SLACK: u64 = 1 << 20;

/// True when `boot` (the first sector, at least 512 bytes) holds a plausible
/// FAT BIOS parameter block, so a random MBR or boot loader is not taken for FAT.
pub fn looks_like_fat(boot: &[u8]) -> bool {
    if boot.len() < 512 || boot[510..512] != [0x55, 0xaa] {
        return false;
    }
    let jump_ok = boot[0] == 0xEB || boot[0] == 0xE9;
    let bytes_per_sector = u16::from_le_bytes([boot[11], boot[12]]);
    let sectors_per_cluster = boot[13];
    let reserved = u16::from_le_bytes([boot[14], boot[15]]);
    let fats = boot[16];
    let media = boot[21];
    let total16 = u16::from_le_bytes([boot[19], boot[20]]);
    let total32 = u32::from_le_bytes([boot[32], boot[33], boot[34], boot[35]]);
    jump_ok
        && bytes_per_sector.is_power_of_two()
        && (512..=4096).contains(&bytes_per_sector)
        && sectors_per_cluster.is_power_of_two()
        && reserved >= 1
        && (1..=2).contains(&fats)
        && (media == 0xF0 || media >= 0xF8)
        && (total16 != 0 || total32 != 0)
}

/// A FAT12/16/32 filesystem, read-only.
pub struct FatFs {
    source: Arc<dyn BlockSource>,
    budget: u64,
    label: Option<String>,
    uuid: String,
    dirty: bool,
}

/// Translates a `fatfs` I/O error into ours, keeping our own errors intact.
fn map_err(e: std::io::Error, path: &str) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        return Error::not_found(format!("{path} on FAT filesystem"));
    }
    let text = e.to_string();
    match e.into_inner().map(|inner| inner.downcast::<Error>()) {
        Some(Ok(ours)) => *ours,
        _ if text == BUDGET_EXHAUSTED => {
            Error::corrupt(format!("FAT cluster chain of {path} does not end ({text})"), 0)
        }
        // fatfs does not say where; the boot sector describes every region.
        _ => Error::corrupt(format!("FAT filesystem ({path}): {text}"), 0),
    }
}

impl FatFs {
    /// Opens the FAT filesystem on `source`, validating its boot sector.
    pub fn open(source: Arc<dyn BlockSource>) -> Result<Self> {
        let mut boot = vec![0u8; 512];
        if source.size() < 512 {
            return Err(Error::corrupt("volume too small for a FAT boot sector", 0));
        }
        source.read_at(0, &mut boot)?;
        if !looks_like_fat(&boot) {
            return Err(Error::corrupt("FAT boot sector has an implausible BPB", 0));
        }
        let budget = source.size().saturating_mul(3).saturating_add(BUDGET_SLACK);
        let mut fs = Self {
            source,
            budget,
            label: None,
            uuid: String::new(),
            dirty: false,
        };
        let vol = fs.fs("/")?;
        let id = vol.volume_id();
        fs.uuid = format!("{:04X}-{:04X}", id >> 16, id & 0xffff);
        // blkid prefers the root directory's label entry over the boot sector's.
        let root_label = vol
            .read_volume_label_from_root_dir()
            .map_err(|e| map_err(e, "/"))?;
        let label = root_label.unwrap_or_else(|| vol.volume_label());
        let label = label.trim_end().to_string();
        fs.label = (!label.is_empty() && label != "NO NAME").then_some(label);
        fs.dirty = vol.read_status_flags().map_err(|e| map_err(e, "/"))?.dirty();
        drop(vol);
        Ok(fs)
    }

    fn fs(&self, path: &str) -> Result<Fs> {
        let cursor = SourceCursor::new(self.source.clone(), self.budget);
        // Never write access dates or the dirty flag: the image is read-only.
        let opts = fatfs::FsOptions::new().update_accessed_date(false);
        Fs::new(cursor, opts).map_err(|e| map_err(e, path))
    }
}

/// Finds `name` in `dir`: exact match first, then case-insensitive on the
/// long or short name (FAT semantics).
fn lookup<'a>(dir: &fatfs::Dir<'a, SourceCursor>, name: &str, path: &str) -> Result<Entry<'a>> {
    let mut folded = None;
    for (n, e) in dir.iter().enumerate() {
        check_limit("directory entries", n as u64, MAX_DIR_ENTRIES as u64)?;
        let e = e.map_err(|err| map_err(err, path))?;
        let long = e.file_name();
        if long == name {
            return Ok(e);
        }
        if folded.is_none()
            && (long.to_lowercase() == name.to_lowercase() || e.short_file_name().eq_ignore_ascii_case(name))
        {
            folded = Some(e);
        }
    }
    folded.ok_or_else(|| Error::not_found(format!("{path} on FAT filesystem")))
}

/// The entry at a physical path (`None` for the root, which has no entry).
fn find<'a>(fs: &'a Fs, path: &str) -> Result<Option<Entry<'a>>> {
    let mut dir = fs.root_dir();
    let mut found = None;
    for comp in path.split('/').filter(|c| !c.is_empty()) {
        if let Some(e) = found.take() {
            let e: Entry<'a> = e;
            if !e.is_dir() {
                return Err(Error::not_found(format!(
                    "{path}: {} is not a directory",
                    e.file_name()
                )));
            }
            dir = e.to_dir();
        }
        found = Some(lookup(&dir, comp, path)?);
    }
    Ok(found)
}

fn entry_type(e: &Entry<'_>) -> FileType {
    if e.is_dir() {
        FileType::Dir
    } else {
        FileType::File
    }
}

impl Filesystem for FatFs {
    fn kind(&self) -> FsKind {
        FsKind::Fat
    }

    fn kind_name(&self) -> &'static str {
        "vfat"
    }

    fn label(&self) -> Option<String> {
        self.label.clone()
    }

    fn uuid(&self) -> Option<String> {
        Some(self.uuid.clone())
    }

    fn lstat(&self, path: &str) -> Result<Metadata> {
        let fs = self.fs(path)?;
        let (file_type, size) = match find(&fs, path)? {
            None => (FileType::Dir, 0),
            Some(e) => (entry_type(&e), if e.is_dir() { 0 } else { e.len() }),
        };
        Ok(Metadata {
            file_type,
            size,
            mode: None,
            uid: None,
            gid: None,
            ino: None,
        })
    }

    fn read_dir(&self, path: &str) -> Result<Vec<DirEntry>> {
        let fs = self.fs(path)?;
        let dir = match find(&fs, path)? {
            None => fs.root_dir(),
            Some(e) if e.is_dir() => e.to_dir(),
            Some(_) => return Err(Error::invalid(format!("{path} is not a directory"))),
        };
        let mut out = Vec::new();
        for e in dir.iter() {
            let e = e.map_err(|err| map_err(err, path))?;
            let name = e.file_name();
            if name == "." || name == ".." {
                continue;
            }
            check_limit("directory entries", out.len() as u64 + 1, MAX_DIR_ENTRIES as u64)?;
            out.push(DirEntry {
                file_type: entry_type(&e),
                name,
            });
        }
        Ok(out)
    }

    fn read_range(&self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let fs = self.fs(path)?;
        let e = match find(&fs, path)? {
            Some(e) if e.is_file() => e,
            _ => return Err(Error::invalid(format!("{path} is not a regular file"))),
        };
        let want = len.min(e.len().saturating_sub(offset));
        check_limit("read_range length", want, MAX_READ_RANGE)?;
        let mut buf = vec![0u8; want as usize];
        if want == 0 {
            return Ok(buf);
        }
        let mut file = e.to_file();
        file.seek(SeekFrom::Start(offset))
            .map_err(|err| map_err(err, path))?;
        let mut done = 0;
        while done < buf.len() {
            let n = file.read(&mut buf[done..]).map_err(|err| map_err(err, path))?;
            if n == 0 {
                return Err(Error::corrupt(
                    format!("FAT cluster chain of {path} ends before its size {}", e.len()),
                    0,
                ));
            }
            done += n;
        }
        Ok(buf)
    }

    fn read_link(&self, path: &str) -> Result<String> {
        Err(Error::invalid(format!("{path}: FAT has no symlinks")))
    }

    fn notes(&self) -> Vec<String> {
        if self.dirty {
            vec!["FAT volume dirty flag is set (not cleanly unmounted)".to_string()]
        } else {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bpb() -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[0] = 0xEB;
        b[11..13].copy_from_slice(&512u16.to_le_bytes());
        b[13] = 4;
        b[14] = 1;
        b[16] = 2;
        b[19..21].copy_from_slice(&32000u16.to_le_bytes());
        b[21] = 0xF8;
        b[510] = 0x55;
        b[511] = 0xAA;
        b
    }

    #[test]
    fn plausible_bpb_is_fat() {
        assert!(looks_like_fat(&bpb()));
    }

    #[test]
    fn mbr_like_sectors_are_not_fat() {
        for (off, val) in [(0, 0xFA), (12, 0x03), (13, 3), (16, 0), (21, 0x12), (510, 0)] {
            let mut b = bpb();
            b[off] = val;
            assert!(!looks_like_fat(&b), "byte {off} = {val:#x}");
        }
    }
}
