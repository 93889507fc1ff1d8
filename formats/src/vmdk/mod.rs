//! VMDK reader: descriptors, hosted sparse and flat extents, streamOptimized,
//! ESXi vmfsSparse (COWD) deltas, and snapshot chains; plus the
//! streamOptimized writer.
//!
//! A VMDK disk is a descriptor (a text file, or text embedded in a sparse
//! extent) listing extents that together make the guest disk. Each extent
//! is FLAT (bytes in a file), ZERO, or sparse (grain directory → grain
//! tables → grains). A delta disk names its parent with
//! `parentFileNameHint`; its unallocated grains fall through to the parent.
//!
//! Policy decisions:
//! - A child whose `parentCID` differs from its parent's `CID` is read
//!   anyway, with a note in `info()`: the data is still what qemu and
//!   VMware's own tools read, but the parent was modified after the
//!   snapshot, so the guest may see an inconsistent disk.
//! - A damaged primary grain directory or grain table (entries pointing past
//!   the end of the file) is replaced by its redundant copy, with a note.
//! - A streamOptimized extent with no usable grain directory is indexed by
//!   scanning its grain markers, with a note.
//! - seSparse extents with a journal pending replay, and raw device
//!   mappings, are refused as unsupported.

pub mod descriptor;
pub mod header;
mod map;
mod sesparse;
mod sparse;
mod stream;
mod write;

pub use descriptor::{Access, Descriptor, ExtentLine, ExtentType, CID_NONE, MAX_EXTENTS};
pub use header::{
    cowd_field, field, CowdHeader, Marker, SparseHeader, GD_AT_END, MAX_DESCRIPTOR_SIZE, MAX_EXTENT_CAPACITY,
    MAX_GD_ENTRIES, MAX_GRAIN_SIZE, MAX_GTES_PER_GT, SECTOR,
};
pub use map::{MAX_GT_CACHE_BYTES, MAX_SCANNED_GRAINS};
pub use sesparse::{se_field, SeSparseExtent, MAX_SESPARSE_GD_ENTRIES, SESPARSE_MAGIC};
pub use sparse::SparseExtent;
pub use write::VmdkWriter;

use crate::block::{check_range, BlockSource, Extent, ExtentKind, ExtentList, ImageInfo};
use crate::detect::Format;
use crate::error::{check_limit, Error, Result};
use crate::file::HostFile;
use crate::open::Opener;
use crate::raw::RawImage;
use std::path::Path;

/// Where the bytes of one descriptor extent come from.
#[derive(Debug)]
enum Store {
    /// Reads as zeros (ZERO or NOACCESS extents).
    Zero,
    /// A byte range of a flat file.
    Flat(RawImage),
    /// A sparse extent.
    Sparse(Box<SparseExtent>),
    /// An ESXi seSparse extent.
    SeSparse(Box<SeSparseExtent>),
}

/// One extent placed in the guest disk.
#[derive(Debug)]
struct Piece {
    start: u64,
    len: u64,
    store: Store,
}

/// An open VMDK disk (with its parent chain).
pub struct VmdkImage {
    path: String,
    file_size: u64,
    size: u64,
    pieces: Vec<Piece>,
    parent: Option<Box<dyn BlockSource>>,
    subformat: Option<String>,
    grain: Option<u64>,
    details: Vec<(String, String)>,
    notes: Vec<String>,
}

impl std::fmt::Debug for VmdkImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmdkImage")
            .field("path", &self.path)
            .field("size", &self.size)
            .field("pieces", &self.pieces)
            .field("has_parent", &self.parent.is_some())
            .finish()
    }
}

/// Opens a sparse extent file, telling KDMV from COWD by magic.
fn open_sparse_extent(file: HostFile) -> Result<SparseExtent> {
    let magic = file.read_vec(0, 4.min(file.len() as usize))?;
    if magic == b"COWD" {
        SparseExtent::open_cowd(file)
    } else {
        SparseExtent::open_kdmv(file)
    }
}

impl VmdkImage {
    /// Opens `file`, already detected as one of the VMDK formats, at chain
    /// depth `depth`; extents and parents are opened through `opener`.
    pub fn open(file: HostFile, format: Format, opener: &Opener, depth: u32) -> Result<Self> {
        let path = file.path().to_path_buf();
        let file_size = file.len();
        let mut notes = Vec::new();
        let (desc, pieces) = match format {
            Format::VmdkDescriptor => {
                check_limit("VMDK descriptor size", file.len(), MAX_DESCRIPTOR_SIZE)?;
                let text = file.read_vec(0, file.len() as usize)?;
                let desc = Descriptor::parse(&text)?;
                let pieces = open_extents(&desc, &path, opener, &mut notes)?;
                (Some(desc), pieces)
            }
            _ => {
                let ext = open_sparse_extent(file)?;
                let desc = match ext.embedded_descriptor.as_deref().map(Descriptor::parse) {
                    Some(Ok(d)) => Some(d),
                    Some(Err(e)) => {
                        notes.push(format!("embedded descriptor ignored: {e}"));
                        None
                    }
                    None => None,
                };
                let len = ext.capacity();
                (
                    desc,
                    vec![Piece {
                        start: 0,
                        len,
                        store: Store::Sparse(Box::new(ext)),
                    }],
                )
            }
        };
        let size = pieces.last().map_or(0, |p| p.start + p.len);
        // For a descriptor, the host bytes are its extents' (each file counted once).
        let mut file_size = file_size;
        if format == Format::VmdkDescriptor {
            let mut seen = std::collections::HashSet::new();
            for p in &pieces {
                let (name, len) = match &p.store {
                    Store::Zero => continue,
                    Store::Flat(r) => {
                        let i = r.info();
                        (i.path, i.file_size.unwrap_or(0))
                    }
                    Store::Sparse(x) => (x.file().path().display().to_string(), x.file().len()),
                    Store::SeSparse(x) => (x.file().path().display().to_string(), x.file().len()),
                };
                if seen.insert(name) {
                    file_size = file_size.saturating_add(len);
                }
            }
        }
        let grain = pieces.iter().find_map(|p| match &p.store {
            Store::Sparse(s) => Some(s.grain_size()),
            Store::SeSparse(s) => Some(s.grain_size()),
            _ => None,
        });
        let mut details = Vec::new();
        if let Some(h) = pieces.iter().find_map(|p| match &p.store {
            Store::Sparse(s) => s.header.as_ref(),
            _ => None,
        }) {
            details.push(("sparse header version".into(), h.version.to_string()));
            if h.compressed() {
                details.push(("compression".into(), "deflate".into()));
            }
        }
        details.push(("extents".into(), pieces.len().to_string()));
        let mut parent = None;
        if let Some(d) = &desc {
            if let Some(cid) = d.cid {
                details.push(("cid".into(), format!("{cid:08x}")));
            }
            if let Some(pcid) = d.parent_cid {
                details.push(("parent cid".into(), format!("{pcid:08x}")));
            }
            for (k, v) in &d.ddb {
                details.push((k.clone(), v.clone()));
            }
            if let Some(hint) = &d.parent_hint {
                details.push(("parent file name hint".into(), hint.clone()));
                let name = local_parent_name(&path, hint);
                if name != *hint {
                    notes.push(format!(
                        "parent '{hint}' is not on this host; used '{name}' next to this disk"
                    ));
                }
                let p = opener.open_backing(&path, &name, None, depth)?;
                let pinfo = p.info();
                let pcid = pinfo
                    .details
                    .iter()
                    .find(|(k, _)| k == "cid")
                    .map(|(_, v)| v.clone());
                if let (Some(want), Some(have)) = (d.parent_cid, pcid) {
                    if format!("{want:08x}") != have {
                        notes.push(format!(
                            "parentCID {want:08x} does not match the parent's CID {have}: \
                             the parent changed after this snapshot was taken; read anyway"
                        ));
                    }
                }
                parent = Some(p);
            }
        }
        let subformat = desc
            .as_ref()
            .map(|d| d.create_type.clone())
            .filter(|s| !s.is_empty())
            .or_else(|| Some(format!("{format}")));
        Ok(VmdkImage {
            path: path.display().to_string(),
            file_size,
            size,
            pieces,
            parent,
            subformat,
            grain,
            details,
            notes,
        })
    }

    /// Fills `buf` (guest offset `off`) from the parent, or with zeros past its end.
    fn read_parent(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        let Some(p) = &self.parent else {
            buf.fill(0);
            return Ok(());
        };
        let psize = p.size();
        let k = psize.saturating_sub(off).min(buf.len() as u64) as usize;
        if k > 0 {
            p.read_at(off, &mut buf[..k])?;
        }
        buf[k..].fill(0);
        Ok(())
    }

    /// Pieces overlapping `[start, end)`.
    fn overlapping(&self, start: u64, end: u64) -> impl Iterator<Item = &Piece> {
        let first = self.pieces.partition_point(|p| p.start + p.len <= start);
        self.pieces[first..].iter().take_while(move |p| p.start < end)
    }
}

/// The parent file to open for `hint`. ESXi and Windows hosts write
/// absolute paths ("/vmfs/volumes/...", "C:\\VMs\\..."); when that path
/// does not exist here but a file of the same name sits next to the child,
/// that file is the parent (the usual state after copying a VM's folder).
/// The opener still applies the backing policy to the result.
fn local_parent_name(child: &Path, hint: &str) -> String {
    let foreign = hint.contains('\\') || (Path::new(hint).is_absolute() && !Path::new(hint).exists());
    if !foreign {
        return hint.to_string();
    }
    let base = hint.rsplit(['/', '\\']).next().unwrap_or(hint);
    let dir = child.parent().unwrap_or(Path::new("."));
    if !base.is_empty() && dir.join(base).is_file() {
        base.to_string()
    } else {
        hint.to_string()
    }
}

/// Opens every extent a descriptor lists.
fn open_extents(
    desc: &Descriptor,
    path: &Path,
    opener: &Opener,
    notes: &mut Vec<String>,
) -> Result<Vec<Piece>> {
    if desc.extents.is_empty() {
        return Err(Error::corrupt("descriptor lists no extents", 0));
    }
    let mut pieces = Vec::with_capacity(desc.extents.len());
    let mut start = 0u64;
    for line in &desc.extents {
        let len = line
            .sectors
            .checked_mul(SECTOR)
            .ok_or_else(|| Error::corrupt("extent size overflows", 0))?;
        let end = start
            .checked_add(len)
            .ok_or_else(|| Error::corrupt("disk size overflows", 0))?;
        check_limit("VMDK disk size", end, MAX_EXTENT_CAPACITY)?;
        let open_file = || -> Result<HostFile> {
            let name = line.file.as_deref().unwrap_or_default();
            HostFile::open(&opener.resolve_extent(path, name)?)
        };
        let store = if line.access == Access::NoAccess {
            notes.push(format!(
                "NOACCESS extent at sector {} reads as zeros",
                start / SECTOR
            ));
            Store::Zero
        } else {
            match line.kind {
                ExtentType::Zero => Store::Zero,
                ExtentType::Flat | ExtentType::Vmfs => {
                    let base = line
                        .offset
                        .checked_mul(SECTOR)
                        .ok_or_else(|| Error::corrupt("extent offset overflows", 0))?;
                    Store::Flat(RawImage::slice(open_file()?, base, len)?)
                }
                ExtentType::Sparse | ExtentType::VmfsSparse => {
                    Store::Sparse(Box::new(open_sparse_extent(open_file()?)?))
                }
                ExtentType::SeSparse => Store::SeSparse(Box::new(SeSparseExtent::open(open_file()?)?)),
                ExtentType::VmfsRdm => {
                    return Err(Error::unsupported("VMDK raw device mapping extents (VMFSRDM)"))
                }
            }
        };
        pieces.push(Piece { start, len, store });
        start = end;
    }
    Ok(pieces)
}

impl BlockSource for VmdkImage {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(self.size, offset, buf.len() as u64)?;
        let end = offset + buf.len() as u64;
        for p in self.overlapping(offset, end) {
            let s = offset.max(p.start);
            let e = end.min(p.start + p.len);
            let sub = &mut buf[(s - offset) as usize..(e - offset) as usize];
            let rel = s - p.start;
            match &p.store {
                Store::Zero => sub.fill(0),
                Store::Flat(r) => r.read_at(rel, sub)?,
                Store::Sparse(_) | Store::SeSparse(_) => {
                    // Past the extent's own capacity the descriptor still covers it: holes.
                    let cap = match &p.store {
                        Store::Sparse(x) => x.capacity(),
                        Store::SeSparse(x) => x.capacity(),
                        _ => 0,
                    };
                    let inside = cap.saturating_sub(rel).min(sub.len() as u64) as usize;
                    let mut holes = Vec::new();
                    match &p.store {
                        Store::Sparse(x) => x.read(rel, &mut sub[..inside], &mut holes)?,
                        Store::SeSparse(x) => x.read(rel, &mut sub[..inside], &mut holes)?,
                        _ => {}
                    }
                    if inside < sub.len() {
                        holes.push((inside, sub.len() - inside));
                    }
                    for (hp, hn) in holes {
                        self.read_parent(s + hp as u64, &mut sub[hp..hp + hn])?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Flat and hosted-sparse extents pass the hint to their files (ESXi
    /// seSparse extents do not), grains this layer lacks to the parent.
    fn prefetch(&self, offset: u64, len: u64) {
        if check_range(self.size, offset, len).is_err() {
            return;
        }
        let end = offset + len;
        for p in self.overlapping(offset, end) {
            let s = offset.max(p.start);
            let e = end.min(p.start + p.len);
            let rel = s - p.start;
            match &p.store {
                Store::Zero | Store::SeSparse(_) => {}
                Store::Flat(r) => r.prefetch(rel, e - s),
                Store::Sparse(x) => {
                    let mut holes = Vec::new();
                    x.prefetch(rel, e - s, &mut holes);
                    let inside = x.capacity().saturating_sub(rel).min(e - s);
                    if inside < e - s {
                        holes.push((rel + inside, e - s - inside));
                    }
                    if let Some(parent) = &self.parent {
                        for (h, n) in holes {
                            let g = p.start + h;
                            parent.prefetch(g, n.min(parent.size().saturating_sub(g)));
                        }
                    }
                }
            }
        }
    }

    fn map(&self, start: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(self.size, start, len)?;
        let end = start + len;
        let mut list = ExtentList::new();
        for p in self.overlapping(start, end) {
            let s = start.max(p.start);
            let e = end.min(p.start + p.len);
            let rel = s - p.start;
            let mut runs = Vec::new();
            match &p.store {
                Store::Zero => runs.push((e - s, ExtentKind::Zero)),
                Store::Flat(r) => {
                    for x in r.map(rel, e - s)? {
                        // A hole in a flat file is zeros, never the parent's data.
                        let kind = match x.kind {
                            ExtentKind::Unallocated if self.parent.is_some() => ExtentKind::Zero,
                            k => k,
                        };
                        runs.push((x.len, kind));
                    }
                }
                Store::Sparse(x) => {
                    let inside = x.capacity().saturating_sub(rel).min(e - s);
                    x.map_into(rel, inside, &mut runs)?;
                    runs.push((e - s - inside, ExtentKind::Unallocated));
                }
                Store::SeSparse(x) => {
                    let inside = x.capacity().saturating_sub(rel).min(e - s);
                    x.map_into(rel, inside, &mut runs)?;
                    runs.push((e - s - inside, ExtentKind::Unallocated));
                }
            }
            let mut pos = s;
            for (n, kind) in runs {
                if n == 0 {
                    continue;
                }
                match (&self.parent, kind) {
                    (Some(parent), ExtentKind::Unallocated) => {
                        let pend = (pos + n).min(parent.size());
                        if pend > pos {
                            list.extend_from_layer(&parent.map(pos, pend - pos)?, 1);
                        }
                        list.push(pend.max(pos), pos + n - pend.max(pos), ExtentKind::Unallocated, 0);
                    }
                    _ => list.push(pos, n, kind, 0),
                }
                pos += n;
            }
        }
        Ok(list.into_vec())
    }

    fn info(&self) -> ImageInfo {
        let mut notes = self.notes.clone();
        for p in &self.pieces {
            if let Store::Sparse(x) = &p.store {
                notes.extend(x.notes());
            }
        }
        ImageInfo {
            path: self.path.clone(),
            format: "vmdk".into(),
            subformat: self.subformat.clone(),
            virtual_size: self.size,
            file_size: Some(self.file_size),
            cluster_size: self.grain,
            details: self.details.clone(),
            notes,
            backing: self.parent.as_ref().map(|p| Box::new(p.info())),
        }
    }
}
