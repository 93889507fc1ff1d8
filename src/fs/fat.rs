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

/// The time stamped on FAT entries conversion writes: `SOURCE_DATE_EPOCH`
/// when set (reproducible output), else now; in UTC.
#[derive(Debug)]
struct ConversionClock;

static CLOCK: ConversionClock = ConversionClock;

impl ConversionClock {
    fn parts() -> (u16, u16, u16, u16, u16, u16) {
        let secs = crate::convert::apply::timestamp().max(315_532_800); // FAT starts in 1980
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        // Civil date from days since 1970-01-01 (proleptic Gregorian).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = (yoe + era * 400 + i64::from(month <= 2)).min(2107);
        (
            year as u16,
            month as u16,
            day as u16,
            (rem / 3600) as u16,
            (rem % 3600 / 60) as u16,
            (rem % 60) as u16,
        )
    }
}

impl fatfs::TimeProvider for ConversionClock {
    fn get_current_date(&self) -> fatfs::Date {
        let (year, month, day, ..) = Self::parts();
        fatfs::Date { year, month, day }
    }
    fn get_current_date_time(&self) -> fatfs::DateTime {
        let (year, month, day, hour, min, sec) = Self::parts();
        fatfs::DateTime {
            date: fatfs::Date { year, month, day },
            time: fatfs::Time {
                hour,
                min,
                sec,
                millis: 0,
            },
        }
    }
}

/// Largest file [`FatWriter::write_file`] writes (a boot loader is a few MiB).
pub const MAX_WRITE: usize = 64 << 20;

/// Edits a FAT filesystem (an EFI System Partition) for conversion: makes
/// directories and writes files, through a writable cursor over a volume of
/// the copy-on-write overlay. Each operation mounts, writes and unmounts, so
/// the boot sector's dirty flag and FSInfo are left consistent.
pub struct FatWriter {
    source: Arc<dyn BlockSource>,
    budget: u64,
}

impl FatWriter {
    /// Checks the boot sector of `source`; a filesystem marked dirty is refused.
    pub fn open(source: Arc<dyn BlockSource>) -> Result<Self> {
        let ro = FatFs::open(source.clone())?;
        if ro.dirty {
            return Err(Error::unsupported(
                "the FAT filesystem is marked dirty (not cleanly unmounted); run fsck.vfat on it first",
            ));
        }
        Ok(Self {
            budget: ro.budget,
            source,
        })
    }

    fn mount(&self, path: &str) -> Result<fatfs::FileSystem<SourceCursor>> {
        let cursor = SourceCursor::writable(self.source.clone(), self.budget);
        let opts = fatfs::FsOptions::new()
            .update_accessed_date(false)
            .time_provider(&CLOCK);
        fatfs::FileSystem::new(cursor, opts).map_err(|e| map_err(e, path))
    }

    /// Creates directory `path` (and missing parents); an existing one is fine.
    pub fn mkdir(&self, path: &str) -> Result<()> {
        let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        for depth in 1..=comps.len() {
            let sub = comps[..depth].join("/");
            let exists = {
                let fs = self.mount(path)?;
                let found = find(&fs, &sub);
                match found {
                    Ok(Some(e)) if e.is_dir() => true,
                    Ok(_) => false,
                    Err(Error::NotFound(_)) => false,
                    Err(e) => return Err(e),
                }
            };
            if exists {
                continue;
            }
            let geo = Geometry::read(self.source.as_ref())?;
            let before = geo.fat(self.source.as_ref())?;
            {
                let fs = self.mount(path)?;
                let parent = match depth {
                    1 => fs.root_dir(),
                    _ => match find(&fs, &comps[..depth - 1].join("/"))? {
                        Some(e) if e.is_dir() => e.to_dir(),
                        _ => {
                            return Err(Error::not_found(format!(
                                "{sub}: parent directory on FAT filesystem"
                            )))
                        }
                    },
                };
                parent
                    .create_dir(comps[depth - 1])
                    .map_err(|e| map_err(e, path))?;
                drop(parent);
                fs.unmount().map_err(|e| map_err(e, path))?;
            }
            let after = geo.fat(self.source.as_ref())?;
            geo.fix_dot_entries(self.source.as_ref(), &before, &after)?;
        }
        Ok(())
    }

    /// Creates or replaces the file at `path` (its directory must exist).
    pub fn write_file(&self, path: &str, data: &[u8]) -> Result<()> {
        use std::io::Write;
        check_limit("FAT file written", data.len() as u64, MAX_WRITE as u64)?;
        let fs = self.mount(path)?;
        {
            let mut f = fs
                .root_dir()
                .create_file(path.trim_start_matches('/'))
                .map_err(|e| map_err(e, path))?;
            f.truncate().map_err(|e| map_err(e, path))?;
            f.write_all(data).map_err(|e| map_err(e, path))?;
            f.flush().map_err(|e| map_err(e, path))?;
        }
        fs.unmount().map_err(|e| map_err(e, path))
    }
}

/// Where a FAT filesystem keeps its tables and clusters (from the BPB).
struct Geometry {
    fat_start: u64,
    fat_len: u64,
    data_start: u64,
    cluster_bytes: u64,
    /// Bits per FAT entry: 12, 16 or 32.
    entry_bits: u64,
}

impl Geometry {
    fn read(src: &dyn BlockSource) -> Result<Self> {
        let mut b = vec![0u8; 512];
        src.read_at(0, &mut b)?;
        let u16at = |o: usize| u64::from(u16::from_le_bytes([b[o], b[o + 1]]));
        let u32at = |o: usize| u64::from(u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]));
        let bps = u16at(11);
        let spc = u64::from(b[13]);
        let reserved = u16at(14);
        let fats = u64::from(b[16]);
        let root_entries = u16at(17);
        let total = if u16at(19) != 0 { u16at(19) } else { u32at(32) };
        let fat_sectors = if u16at(22) != 0 { u16at(22) } else { u32at(36) };
        let root_sectors = (root_entries * 32).div_ceil(bps.max(1));
        let meta = reserved + fats * fat_sectors + root_sectors;
        if bps == 0 || spc == 0 || meta >= total {
            return Err(Error::corrupt("FAT boot sector geometry", 0));
        }
        let clusters = (total - meta) / spc;
        let entry_bits = match clusters {
            0..4085 => 12,
            4085..65525 => 16,
            _ => 32,
        };
        let fat_len = fat_sectors * bps;
        check_limit("FAT table size", fat_len, 64 << 20)?;
        Ok(Self {
            fat_start: reserved * bps,
            fat_len,
            data_start: meta * bps,
            cluster_bytes: spc * bps,
            entry_bits,
        })
    }

    fn fat(&self, src: &dyn BlockSource) -> Result<Vec<u8>> {
        let mut t = vec![0u8; self.fat_len as usize];
        src.read_at(self.fat_start, &mut t)?;
        Ok(t)
    }

    /// `fatfs` 0.3 writes long-name entries in front of a new directory's
    /// "." and ".." entries, which fsck.fat (and some firmware) reject: they
    /// must be the first two slots. Finds the directory cluster that `mkdir`
    /// allocated (the FAT entry that changed) and rewrites its start as
    /// ".", "..", then free slots.
    fn fix_dot_entries(&self, src: &dyn BlockSource, before: &[u8], after: &[u8]) -> Result<()> {
        let mut candidates = std::collections::BTreeSet::new();
        for (i, (a, b)) in before.iter().zip(after).enumerate() {
            if a != b {
                let c = (i as u64 * 8) / self.entry_bits;
                candidates.extend([c.saturating_sub(1), c, c + 1]);
            }
        }
        for c in candidates.into_iter().filter(|&c| c >= 2) {
            let at = self.data_start + (c - 2) * self.cluster_bytes;
            if at + 128 > src.size() {
                continue;
            }
            let mut slots = [0u8; 128];
            src.read_at(at, &mut slots)?;
            let is_lfn = |s: &[u8]| s[11] == 0x0F;
            let is_dot = |s: &[u8], name: &[u8; 11]| &s[..11] == name && s[11] & 0x10 != 0;
            if is_lfn(&slots[0..32])
                && is_dot(&slots[32..64], b".          ")
                && is_lfn(&slots[64..96])
                && is_dot(&slots[96..128], b"..         ")
            {
                let mut fixed = [0u8; 128];
                fixed[..32].copy_from_slice(&slots[32..64]);
                fixed[32..64].copy_from_slice(&slots[96..128]);
                src.write_through(at, &fixed)?;
                return Ok(());
            }
        }
        Ok(())
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
