//! VHDX reader: fixed, dynamic and differencing (`.avhdx`) disks.
//!
//! Opening picks the valid header with the highest sequence number, replays
//! a pending log into memory (see [`log`]; the source is never written),
//! then reads the region table, metadata and BAT through the replayed view.
//! Unknown *required* regions or metadata items are refused as unsupported.

mod header;
mod log;
mod map;
mod write;

pub use header::{
    header_off, MAX_DISK_SIZE, MAX_METADATA_ENTRIES, MAX_METADATA_ITEM_LEN, MAX_REGION_ENTRIES,
};
pub use log::{MAX_LOG_HEADS_TRIED, MAX_LOG_LEN, MAX_REPLAY_FILE_OFFSET};
pub use map::{MAX_BAT_ENTRIES, MAX_BITMAP_CACHE_BYTES};
pub use write::{VhdxDynamicWriter, DEFAULT_BLOCK_SIZE};

use crate::block::{check_range, BlockSource, Extent, ImageInfo};
use crate::detect::Format;
use crate::error::{Error, Result};
use crate::file::HostFile;
use crate::open::Opener;
use crate::vhd::runs::{map_runs, prefetch_runs, read_runs, ReadAt};
use header::{fmt_guid, Metadata};
use log::LoggedFile;
use map::Bat;
use std::path::{Path, PathBuf};

/// An open VHDX with its parent, if differencing.
pub struct VhdxImage {
    file: LoggedFile,
    md: Metadata,
    bat: Bat,
    parent: Option<Box<dyn BlockSource>>,
    notes: Vec<String>,
}

impl std::fmt::Debug for VhdxImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VhdxImage")
            .field("file", &self.file.host().path())
            .field("metadata", &self.md)
            .field("has_parent", &self.parent.is_some())
            .finish_non_exhaustive()
    }
}

impl VhdxImage {
    /// Parses `file` (replaying its log in memory), opening the parent of a
    /// differencing disk through `opener`. `depth` is this image's chain depth.
    pub fn open(file: HostFile, opener: &Opener, depth: u32) -> Result<Self> {
        let mut sig = [0u8; 8];
        file.read_exact_at(0, &mut sig)?;
        if &sig != b"vhdxfile" {
            return Err(Error::corrupt("no VHDX file signature 'vhdxfile'", 0));
        }
        let mut file = LoggedFile::new(file);
        let hdr = header::read_header(&file)?;
        let mut notes = Vec::new();
        if let Some(n) = log::replay(&mut file, &hdr)? {
            notes.push(n);
        }
        let regions = header::read_regions(&file)?;
        let md = header::read_metadata(&file, regions.metadata)?;
        let bat = Bat::load(&file, regions.bat, &md)?;
        let parent = if md.has_parent {
            Some(open_parent(file.host().path(), &md, opener, depth)?)
        } else {
            None
        };
        Ok(VhdxImage {
            file,
            md,
            bat,
            parent,
            notes,
        })
    }
}

/// Resolves the parent from the locator's paths (relative first), checks
/// its DataWriteGuid against `parent_linkage`, and opens it.
fn open_parent(child: &Path, md: &Metadata, opener: &Opener, depth: u32) -> Result<Box<dyn BlockSource>> {
    let get = |k: &str| {
        md.parent_locator
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let linkage: Vec<String> = ["parent_linkage", "parent_linkage2"]
        .iter()
        .filter_map(|k| get(k))
        .map(|v| v.trim_matches(|c| c == '{' || c == '}').to_ascii_lowercase())
        .collect();
    if linkage.is_empty() {
        return Err(Error::corrupt("differencing VHDX has no parent_linkage", 0));
    }
    let mut tried: Vec<PathBuf> = Vec::new();
    for key in ["relative_path", "volume_path", "absolute_win32_path"] {
        let Some(raw) = get(key) else { continue };
        for name in crate::vhd::parent_candidates(raw) {
            let looked = crate::vhd::child_dir(child).join(&name);
            if tried.contains(&looked) {
                continue;
            }
            tried.push(looked);
            let path = match opener.resolve_backing(child, &name) {
                Ok(p) => p,
                Err(e @ Error::Denied(_)) => return Err(e),
                Err(_) => continue,
            };
            let pfile = HostFile::open(&path)?;
            let phdr = header::read_header(&pfile)?;
            let id = fmt_guid(&phdr.data_write_guid);
            if !linkage.contains(&id) {
                return Err(Error::corrupt(
                    format!(
                        "parent {} has DataWriteGuid {id} but {} expects {}",
                        path.display(),
                        child.display(),
                        linkage.join(" or ")
                    ),
                    0,
                ));
            }
            return opener.open_backing(child, &name, Some(Format::Vhdx), depth);
        }
    }
    let looked: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
    Err(Error::io(
        format!(
            "opening the parent of differencing VHDX {} (looked for {})",
            child.display(),
            if looked.is_empty() {
                "nothing: the parent locator has no path".to_string()
            } else {
                looked.join(", ")
            }
        ),
        std::io::Error::from(std::io::ErrorKind::NotFound),
    ))
}

impl BlockSource for VhdxImage {
    fn size(&self) -> u64 {
        self.md.disk_size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(self.size(), offset, buf.len() as u64)?;
        let runs = self.bat.runs(&self.file, offset, buf.len() as u64)?;
        read_runs(
            &self.file as &dyn ReadAt,
            self.parent.as_deref(),
            runs.runs(),
            offset,
            buf,
        )
    }

    fn map(&self, start: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(self.size(), start, len)?;
        let runs = self.bat.runs(&self.file, start, len)?;
        map_runs(self.parent.as_deref(), runs.runs())
    }

    fn prefetch(&self, offset: u64, len: u64) {
        if check_range(self.size(), offset, len).is_ok() {
            if let Ok(runs) = self.bat.runs(&self.file, offset, len) {
                prefetch_runs(&self.file, self.parent.as_deref(), runs.runs());
            }
        }
    }

    fn info(&self) -> ImageInfo {
        let sub = if self.md.has_parent {
            "differencing"
        } else if self.md.leave_allocated {
            "fixed"
        } else {
            "dynamic"
        };
        let mut details = vec![
            (
                "logical sector size".to_string(),
                self.md.logical_sector.to_string(),
            ),
            (
                "physical sector size".to_string(),
                self.md.physical_sector.to_string(),
            ),
            ("allocated blocks".to_string(), self.bat.allocated().to_string()),
        ];
        if let Some(id) = &self.md.disk_id {
            details.push(("virtual disk id".into(), fmt_guid(id)));
        }
        ImageInfo {
            path: self.file.host().path().display().to_string(),
            format: "vhdx".into(),
            subformat: Some(sub.into()),
            virtual_size: self.md.disk_size,
            file_size: Some(self.file.host().len()),
            cluster_size: Some(self.md.block_size),
            details,
            notes: self.notes.clone(),
            backing: self.parent.as_ref().map(|p| Box::new(p.info())),
        }
    }
}
