//! VHD ("vpc") reader: fixed, dynamic and differencing disks.
//!
//! The guest size is the footer's `current_size`, never the CHS geometry:
//! Disk2vhd stores the maximal geometry, and `current_size` is what every
//! writer sets to the real size.
//!
//! Sector bitmaps are honoured: a clear bit reads from the parent in a
//! differencing disk and as zero (unallocated) in a dynamic one. qemu ignores
//! bitmaps when reading dynamic disks; every corpus image agrees either way,
//! since writers zero a block when they allocate it.
//!
//! **Footer checksum policy: warn, do not refuse.** Tools that edit a disk's
//! unique ID (dfvfs's test images) leave a stale checksum while every field is
//! still right. We prefer the end-of-file footer when its checksum is valid,
//! else the copy at offset 0 of a dynamic disk when *its* checksum is valid
//! (the tail may be damaged), else the end footer (or the copy) as it is,
//! with a note in [`ImageInfo::notes`]. The dynamic header is treated the same
//! way (dfvfs also edited the parent ID there). Every field is still checked
//! for sanity, so a bad checksum can mislead us only into reading the wrong
//! (in-file, bounds-checked) blocks, never into a panic or a huge allocation.

mod header;
mod map;
pub(crate) mod runs;
mod write;
mod write_dynamic;

pub use header::{dyn_off, footer_off, DiskType, MAX_BLOCK_SIZE, MAX_LOCATOR_LEN};
pub use map::{MAX_BAT_ENTRIES, MAX_CACHED_BITMAPS};
pub use write::{chs, VhdFixedWriter, MAX_WRITE_SIZE};
pub use write_dynamic::{VhdDynamicWriter, DYNAMIC_BLOCK_SIZE};

use crate::block::{check_range, BlockSource, Extent, ImageInfo};
use crate::detect::Format;
use crate::error::{check_limit, Error, Result};
use crate::file::HostFile;
use crate::open::Opener;
use header::{Footer, DYN_HEADER_LEN, FOOTER_LEN};
use map::Bat;
use runs::{map_runs, prefetch_runs, read_runs, RunList, Source};
use std::path::{Path, PathBuf};

/// Largest guest size we accept (the format itself stops near 2 TiB).
pub const MAX_DISK_SIZE: u64 = 64 << 40;

/// An open VHD with its parent, if differencing.
pub struct VhdImage {
    file: HostFile,
    footer: Footer,
    bat: Option<Bat>,
    block_size: Option<u64>,
    parent: Option<Box<dyn BlockSource>>,
    notes: Vec<String>,
}

impl std::fmt::Debug for VhdImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VhdImage")
            .field("file", &self.file.path())
            .field("footer", &self.footer)
            .field("has_parent", &self.parent.is_some())
            .finish_non_exhaustive()
    }
}

/// Finds the footer to trust, following the checksum policy in the module docs.
/// Returns the footer, its file offset, and notes for the user.
fn find_footer(file: &HostFile) -> Result<(Footer, u64, Vec<String>)> {
    let len = file.len();
    if len < FOOTER_LEN as u64 {
        return Err(Error::corrupt(
            format!("{} is too short to hold a VHD footer", file.path().display()),
            0,
        ));
    }
    let mut tail = None;
    for back in [FOOTER_LEN as u64, FOOTER_LEN as u64 - 1] {
        let at = len - back;
        let mut buf = vec![0u8; FOOTER_LEN];
        file.read_exact_at(at, &mut buf[..back as usize])?;
        if let Ok(f) = header::parse_footer(&buf, at) {
            tail = Some((f, at));
            break;
        }
    }
    let head = header::parse_footer(&file.read_vec(0, FOOTER_LEN)?, 0)
        .ok()
        .filter(|f| f.disk_type != DiskType::Fixed)
        .filter(|_| tail.as_ref().is_none_or(|(_, at)| *at != 0));
    let mut notes = Vec::new();
    let chosen = match (tail, head) {
        (Some(t), _) if t.0.checksum_ok => t,
        (t, Some(h)) if h.checksum_ok => {
            if t.is_some() {
                notes.push("the footer at the end has a bad checksum; used the copy at offset 0".into());
            } else {
                notes.push("no footer at the end of the file; used the copy at offset 0".into());
            }
            (h, 0)
        }
        (Some(t), _) => {
            notes.push("VHD footer checksum mismatch; fields used as stored".into());
            t
        }
        (None, Some(h)) => {
            notes.push("no footer at the end; used the copy at offset 0 despite its bad checksum".into());
            (h, 0)
        }
        (None, None) => {
            return Err(Error::corrupt(
                format!(
                    "{}: no VHD footer cookie at the end or at offset 0",
                    file.path().display()
                ),
                len - FOOTER_LEN as u64,
            ))
        }
    };
    Ok((chosen.0, chosen.1, notes))
}

impl VhdImage {
    /// Parses the footer, dynamic header and BAT of `file`, opening the
    /// parent of a differencing disk through `opener`. `depth` is this
    /// image's depth in the chain.
    pub fn open(file: HostFile, opener: &Opener, depth: u32) -> Result<Self> {
        let (footer, footer_at, notes) = find_footer(&file)?;
        let size = footer.current_size;
        check_limit("VHD disk size", size, MAX_DISK_SIZE)?;
        let mut img = VhdImage {
            file,
            footer,
            bat: None,
            block_size: None,
            parent: None,
            notes,
        };
        if img.footer.disk_type == DiskType::Fixed {
            if size > footer_at {
                return Err(Error::corrupt(
                    format!("fixed VHD of {size} bytes does not fit before its footer"),
                    footer_at + footer_off::CURRENT_SIZE as u64,
                ));
            }
            return Ok(img);
        }
        let hdr_at = img.footer.data_offset;
        let hdr_buf = match hdr_at.checked_add(DYN_HEADER_LEN as u64) {
            Some(end) if end <= img.file.len() => img.file.read_vec(hdr_at, DYN_HEADER_LEN)?,
            _ => {
                return Err(Error::corrupt(
                    format!("VHD dynamic header offset {hdr_at:#x} lies past the end of the file"),
                    footer_at + footer_off::DATA_OFFSET as u64,
                ))
            }
        };
        let hdr = header::parse_dyn_header(&hdr_buf, hdr_at)?;
        if !hdr.checksum_ok {
            img.notes
                .push("VHD dynamic header checksum mismatch; fields used as stored".into());
        }
        let differencing = img.footer.disk_type == DiskType::Differencing;
        img.bat = Some(Bat::load(&img.file, &hdr, hdr_at, size, differencing)?);
        img.block_size = Some(hdr.block_size);
        if differencing {
            img.parent = Some(open_parent(&img.file, &hdr, opener, depth)?);
        }
        Ok(img)
    }

    fn runs(&self, start: u64, len: u64) -> Result<RunList> {
        match &self.bat {
            Some(bat) => bat.runs(&self.file, start, len),
            None => {
                let mut l = RunList::new();
                l.push(start, len, Source::Stored(start));
                Ok(l)
            }
        }
    }
}

/// Turns a stored parent path into candidate names relative to the child:
/// backslashes become slashes, a Windows drive or UNC path is reduced to its
/// file name, and an absolute path is also tried as a file name next to the
/// child (disks are often moved together). The unique-ID check guards
/// against picking up an unrelated file.
pub(crate) fn parent_candidates(raw: &str) -> Vec<String> {
    let s = raw.replace('\\', "/");
    let b = s.as_bytes();
    let drive = b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':';
    let name = s.rsplit('/').next().unwrap_or("").to_string();
    let mut out = Vec::new();
    if !(drive || s.starts_with("//") || s.is_empty()) {
        out.push(s.clone());
    }
    if (drive || s.starts_with('/')) && !name.is_empty() {
        out.push(name);
    }
    out
}

/// Reads the parent locators (relative first), resolves each through the
/// opener's policy, checks the parent's unique ID and opens it.
fn open_parent(
    file: &HostFile,
    hdr: &header::DynHeader,
    opener: &Opener,
    depth: u32,
) -> Result<Box<dyn BlockSource>> {
    let child = file.path();
    let mut names = Vec::new();
    let mut locs = hdr.locators.clone();
    locs.sort_by_key(|l| match l.code {
        header::PLAT_W2RU => 0,
        header::PLAT_W2KU => 1,
        _ => 2,
    });
    for l in &locs {
        check_limit(
            "VHD parent locator length",
            u64::from(l.data_len),
            MAX_LOCATOR_LEN,
        )?;
        let Ok(data) = file.read_vec(l.data_offset, l.data_len as usize) else {
            continue;
        };
        if let Some(p) = header::locator_path(l.code, &data) {
            names.extend(parent_candidates(&p));
        }
    }
    names.extend(parent_candidates(&hdr.parent_name));
    let mut tried: Vec<PathBuf> = Vec::new();
    for name in &names {
        let looked = child_dir(child).join(name);
        if tried.contains(&looked) {
            continue;
        }
        tried.push(looked);
        let path = match opener.resolve_backing(child, name) {
            Ok(p) => p,
            Err(e @ Error::Denied(_)) => return Err(e),
            Err(_) => continue,
        };
        let pfile = HostFile::open(&path)?;
        let (pfooter, _, _) = find_footer(&pfile)?;
        if pfooter.unique_id != hdr.parent_unique_id {
            return Err(Error::corrupt(
                format!(
                    "parent {} has unique ID {} but {} expects {}",
                    path.display(),
                    hex(&pfooter.unique_id),
                    child.display(),
                    hex(&hdr.parent_unique_id)
                ),
                0,
            ));
        }
        return opener.open_backing(child, name, Some(Format::Vhd), depth);
    }
    let looked: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
    Err(Error::io(
        format!(
            "opening the parent of differencing VHD {} (named '{}'; looked for {})",
            child.display(),
            hdr.parent_name,
            if looked.is_empty() {
                "nothing: no usable parent locator".to_string()
            } else {
                looked.join(", ")
            }
        ),
        std::io::Error::from(std::io::ErrorKind::NotFound),
    ))
}

/// The directory holding `child`, where relative parent names are looked up.
pub(crate) fn child_dir(child: &Path) -> PathBuf {
    match child.parent() {
        Some(p) if p.components().next().is_some() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl BlockSource for VhdImage {
    fn size(&self) -> u64 {
        self.footer.current_size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(self.size(), offset, buf.len() as u64)?;
        let runs = self.runs(offset, buf.len() as u64)?;
        read_runs(&self.file, self.parent.as_deref(), runs.runs(), offset, buf)
    }

    fn map(&self, start: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(self.size(), start, len)?;
        let runs = self.runs(start, len)?;
        map_runs(self.parent.as_deref(), runs.runs())
    }

    fn prefetch(&self, offset: u64, len: u64) {
        if check_range(self.size(), offset, len).is_ok() {
            if let Ok(runs) = self.runs(offset, len) {
                prefetch_runs(&self.file, self.parent.as_deref(), runs.runs());
            }
        }
    }

    fn info(&self) -> ImageInfo {
        let f = &self.footer;
        let mut details = vec![
            (
                "creator".to_string(),
                String::from_utf8_lossy(&f.creator_app)
                    .trim_end_matches('\0')
                    .to_string(),
            ),
            ("chs".to_string(), format!("{}/{}/{}", f.chs.0, f.chs.1, f.chs.2)),
            ("unique id".to_string(), hex(&f.unique_id)),
        ];
        if let Some(bat) = &self.bat {
            details.push(("allocated blocks".into(), bat.allocated().to_string()));
        }
        ImageInfo {
            path: self.file.path().display().to_string(),
            format: "vpc".into(),
            subformat: Some(f.disk_type.name().into()),
            virtual_size: f.current_size,
            file_size: Some(self.file.len()),
            cluster_size: self.block_size,
            details,
            notes: self.notes.clone(),
            backing: self.parent.as_ref().map(|p| Box::new(p.info())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parent_candidates;

    #[test]
    fn parent_names_become_local_candidates() {
        assert_eq!(parent_candidates(".\\p.vhd"), ["./p.vhd"]);
        assert_eq!(parent_candidates("C:\\VMs\\p.vhd"), ["p.vhd"]);
        assert_eq!(parent_candidates("\\\\srv\\share\\p.vhd"), ["p.vhd"]);
        assert_eq!(parent_candidates("/Users/a/p.vhd"), ["/Users/a/p.vhd", "p.vhd"]);
        assert!(parent_candidates("").is_empty());
    }
}
