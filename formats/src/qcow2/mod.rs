//! qcow2 reader (versions 2 and 3): zero clusters, deflate and zstd
//! compressed clusters, extended L2 entries (subclusters), backing chains and
//! (when allowed) external data files. Internal snapshots are ignored; the
//! active layer is read.
//!
//! `header` parses the first cluster, `map` turns guest offsets into
//! [`map::Mapping`]s through the L1/L2 tables, and this module does the I/O:
//! physically contiguous clusters are read with one `pread`, holes are
//! filled with zeros or read from the backing file.

mod compressed;
pub mod header;
pub mod map;
pub mod write;

pub use write::Qcow2Writer;

use crate::block::{check_range, BlockSource, Extent, ExtentKind, ExtentList, ImageInfo};
use crate::error::{Error, Result};
use crate::file::HostFile;
use crate::open::Opener;
use header::{Header, INCOMPAT_CORRUPT, INCOMPAT_DATA_FILE, INCOMPAT_DIRTY, INCOMPAT_KNOWN};
use map::{ClusterMap, Mapping, Piece};
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

/// An open qcow2 image with its backing chain.
pub struct Qcow2Image {
    header: Header,
    map: ClusterMap,
    /// The external data file, when the image has one.
    data_file: Option<HostFile>,
    backing: Option<Box<dyn BlockSource>>,
    /// Unique per open image; keys per-thread caches.
    id: u64,
}

impl std::fmt::Debug for Qcow2Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qcow2Image")
            .field("path", &self.map.file().path())
            .field("header", &self.header)
            .field("has_backing", &self.backing.is_some())
            .finish()
    }
}

impl Qcow2Image {
    /// Parses the header and tables of `file`, opening its backing file
    /// through `opener`. `depth` is this image's depth in the chain.
    pub fn open(file: HostFile, opener: &Opener, depth: u32) -> Result<Self> {
        let h = header::parse(&file)?;
        let path = file.path().to_path_buf();
        let shown = path.display();
        if h.incompatible & INCOMPAT_CORRUPT != 0 {
            return Err(Error::corrupt(
                format!("{shown} is marked corrupt by QEMU (incompatible feature bit 1)"),
                72,
            ));
        }
        let unknown = h.incompatible & !INCOMPAT_KNOWN;
        if unknown != 0 {
            return Err(Error::unsupported(format!(
                "{shown} uses incompatible qcow2 features v2x does not know: {}",
                h.feature_list(0, unknown)
            )));
        }
        if h.incompatible & INCOMPAT_DIRTY != 0 {
            return Err(Error::unsupported(format!(
                "{shown} was not closed cleanly (dirty bit set); run `qemu-img check -r all` \
                 on a copy of it and convert the copy"
            )));
        }
        if h.has_crypto_ext {
            return Err(Error::corrupt(
                "full-disk encryption header extension in an unencrypted image",
                h.header_length.into(),
            ));
        }
        if h.extended_l2() && h.cluster_bits < header::MIN_EXTENDED_L2_CLUSTER_BITS {
            return Err(Error::corrupt(
                format!(
                    "extended L2 entries need clusters of at least 16 KiB, not {}",
                    h.cluster_size()
                ),
                20,
            ));
        }
        let data_file = if h.incompatible & INCOMPAT_DATA_FILE != 0 {
            let Some(name) = h.data_file.as_deref() else {
                return Err(Error::corrupt(
                    "external data file bit set but no data file name extension",
                    72,
                ));
            };
            if !opener.options().allow_external_data {
                return Err(Error::Denied(format!(
                    "{shown} keeps its data in the external file '{name}'; \
                     pass --allow-external-data to read it"
                )));
            }
            let resolved = opener.resolve_backing(&path, name)?;
            Some(HostFile::open(&resolved)?)
        } else {
            None
        };
        let data_len = data_file.as_ref().map_or(file.len(), HostFile::len);
        let map = ClusterMap::load(file, &h, data_len)?;
        let backing = match &h.backing_file {
            Some(name) => Some(opener.open_backing(&path, name, h.backing_format_hint(), depth)?),
            None => None,
        };
        Ok(Qcow2Image {
            header: h,
            map,
            data_file,
            backing,
            id: NEXT_IMAGE_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// The file guest clusters are read from.
    fn data(&self) -> &HostFile {
        self.data_file.as_ref().unwrap_or(self.map.file())
    }

    /// Fills `buf` with guest bytes `[start, start + buf.len())` that this
    /// image does not store: the backing file's bytes, zeros past its end.
    fn read_backing(&self, start: u64, buf: &mut [u8]) -> Result<()> {
        let Some(b) = &self.backing else {
            buf.fill(0);
            return Ok(());
        };
        let avail = b.size().saturating_sub(start).min(buf.len() as u64) as usize;
        let (head, tail) = buf.split_at_mut(avail);
        if !head.is_empty() {
            b.read_at(start, head)?;
        }
        tail.fill(0);
        Ok(())
    }

    /// Reads the part of a compressed cluster that `piece` covers into `out`.
    fn read_compressed(&self, piece: &Piece, host_offset: u64, clen: u64, out: &mut [u8]) -> Result<()> {
        let cs = self.header.cluster_size();
        let in_cluster = (piece.start % cs) as usize;
        let whole = in_cluster == 0 && out.len() as u64 == cs;
        let key = (self.id, host_offset);
        if !whole {
            // Requests that split a cluster (1 MiB reads of 2 MiB clusters) reuse
            // the cluster this thread decompressed last.
            let hit = LAST_CLUSTER.with(|c| {
                let c = c.borrow();
                let ok = c.key == Some(key) && c.bytes.len() as u64 == cs;
                if ok {
                    out.copy_from_slice(&c.bytes[in_cluster..in_cluster + out.len()]);
                }
                ok
            });
            if hit {
                return Ok(());
            }
        }
        let mut input = vec![0u8; clen as usize];
        self.map.file().read_at_zero_fill(host_offset, &mut input)?;
        if whole {
            return compressed::decompress(self.header.compression, &input, out, host_offset);
        }
        LAST_CLUSTER.with(|c| {
            let mut c = c.borrow_mut();
            c.key = None;
            c.bytes.resize(cs as usize, 0);
            compressed::decompress(self.header.compression, &input, &mut c.bytes, host_offset)?;
            c.key = Some(key);
            out.copy_from_slice(&c.bytes[in_cluster..in_cluster + out.len()]);
            Ok(())
        })
    }
}

/// Source of [`Qcow2Image`] ids, so per-thread caches never mix images.
static NEXT_IMAGE_ID: AtomicU64 = AtomicU64::new(0);

/// A decompressed cluster kept for the next partial read of it.
struct DecompressedCluster {
    /// (image id, host offset of the compressed stream), None while not valid.
    key: Option<(u64, u64)>,
    bytes: Vec<u8>,
}

thread_local! {
    /// The last cluster this thread decompressed for a partial read.
    static LAST_CLUSTER: RefCell<DecompressedCluster> =
        const { RefCell::new(DecompressedCluster { key: None, bytes: Vec::new() }) };
}

/// A run of guest bytes read with one call: from the data file or the backing chain.
#[derive(Debug, Clone, Copy)]
enum Run {
    Data { guest: u64, host: u64, len: u64 },
    Backing { guest: u64, len: u64 },
}

impl BlockSource for Qcow2Image {
    fn size(&self) -> u64 {
        self.header.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(self.header.size, offset, buf.len() as u64)?;
        let end = offset + buf.len() as u64;
        let mut pieces = Vec::new();
        self.map.walk(offset, end, &mut |p| {
            pieces.push(p);
            Ok(())
        })?;
        // Pieces lie inside [offset, end), so these indices are in range.
        fn slice(buf: &mut [u8], base: u64, guest: u64, len: u64) -> &mut [u8] {
            let a = (guest - base) as usize;
            &mut buf[a..a + len as usize]
        }
        let mut run: Option<Run> = None;
        let flush = |run: &mut Option<Run>, buf: &mut [u8]| -> Result<()> {
            match run.take() {
                Some(Run::Data { guest, host, len }) => self
                    .data()
                    .read_at_zero_fill(host, slice(buf, offset, guest, len)),
                Some(Run::Backing { guest, len }) => self.read_backing(guest, slice(buf, offset, guest, len)),
                None => Ok(()),
            }
        };
        for p in &pieces {
            match p.mapping {
                Mapping::Data { host_offset } => {
                    if let Some(Run::Data { host, len, .. }) = &mut run {
                        if *host + *len == host_offset {
                            *len += p.len;
                            continue;
                        }
                    }
                    flush(&mut run, buf)?;
                    run = Some(Run::Data {
                        guest: p.start,
                        host: host_offset,
                        len: p.len,
                    });
                }
                Mapping::Unallocated if self.backing.is_some() => {
                    if let Some(Run::Backing { len, .. }) = &mut run {
                        *len += p.len;
                        continue;
                    }
                    flush(&mut run, buf)?;
                    run = Some(Run::Backing {
                        guest: p.start,
                        len: p.len,
                    });
                }
                Mapping::Unallocated | Mapping::Zero => {
                    flush(&mut run, buf)?;
                    slice(buf, offset, p.start, p.len).fill(0);
                }
                Mapping::Compressed { host_offset, len } => {
                    flush(&mut run, buf)?;
                    self.read_compressed(p, host_offset, len, slice(buf, offset, p.start, p.len))?;
                }
            }
        }
        flush(&mut run, buf)
    }

    /// Data and compressed clusters are prefetched from the file (host-
    /// contiguous ones as one range), unallocated ones from the backing file.
    fn prefetch(&self, offset: u64, len: u64) {
        if check_range(self.header.size, offset, len).is_err() {
            return;
        }
        let mut host_run: Option<(u64, u64)> = None;
        let _ = self.map.walk(offset, offset + len, &mut |p| {
            let (at, n) = match p.mapping {
                Mapping::Data { host_offset } => (host_offset, p.len),
                Mapping::Compressed { host_offset, len } => (host_offset, len),
                Mapping::Unallocated => {
                    if let Some(b) = &self.backing {
                        b.prefetch(p.start, p.len.min(b.size().saturating_sub(p.start)));
                    }
                    return Ok(());
                }
                Mapping::Zero => return Ok(()),
            };
            match &mut host_run {
                // Contiguous, or overlapping (a compressed cluster often
                // shares a sector with the one before): extend the range.
                Some((s, l)) if at >= *s && at <= s.saturating_add(*l) => {
                    *l = (*l).max(at.saturating_add(n) - *s)
                }
                _ => {
                    if let Some((s, l)) = host_run.replace((at, n)) {
                        self.data().prefetch(s, l);
                    }
                }
            }
            Ok(())
        });
        if let Some((s, l)) = host_run {
            self.data().prefetch(s, l);
        }
    }

    fn map(&self, start: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(self.header.size, start, len)?;
        let mut list = ExtentList::new();
        // Unallocated runs are collected, then asked of the backing file in one call.
        let mut hole: Option<(u64, u64)> = None;
        let flush_hole = |hole: &mut Option<(u64, u64)>, list: &mut ExtentList| -> Result<()> {
            let Some((s, l)) = hole.take() else {
                return Ok(());
            };
            let in_backing = match &self.backing {
                Some(b) => b.size().saturating_sub(s).min(l),
                None => 0,
            };
            if let (Some(b), true) = (&self.backing, in_backing > 0) {
                list.extend_from_layer(&b.map(s, in_backing)?, 1);
            }
            list.push(s + in_backing, l - in_backing, ExtentKind::Unallocated, 0);
            Ok(())
        };
        self.map.walk(start, start + len, &mut |p| {
            let kind = match p.mapping {
                Mapping::Unallocated => {
                    match &mut hole {
                        Some((_, l)) => *l += p.len,
                        None => hole = Some((p.start, p.len)),
                    }
                    return Ok(());
                }
                Mapping::Zero => ExtentKind::Zero,
                Mapping::Data { .. } | Mapping::Compressed { .. } => ExtentKind::Data,
            };
            flush_hole(&mut hole, &mut list)?;
            list.push(p.start, p.len, kind, 0);
            Ok(())
        })?;
        flush_hole(&mut hole, &mut list)?;
        Ok(list.into_vec())
    }

    fn info(&self) -> ImageInfo {
        let h = &self.header;
        let mut details = vec![
            ("compression type".to_string(), h.compression.name().to_string()),
            (
                "refcount bits".to_string(),
                (1u64 << h.refcount_order).to_string(),
            ),
        ];
        if h.version >= 3 {
            details.push(("extended l2".into(), h.extended_l2().to_string()));
            details.push((
                "lazy refcounts".into(),
                (h.compatible & header::COMPAT_LAZY_REFCOUNTS != 0).to_string(),
            ));
        }
        if let Some(b) = &h.backing_file {
            details.push(("backing file".into(), b.clone()));
        }
        if let Some(f) = &h.backing_format {
            details.push(("backing file format".into(), f.clone()));
        }
        if let Some(d) = &h.data_file {
            details.push(("data file".into(), d.clone()));
            details.push((
                "data file raw".into(),
                (h.autoclear & header::AUTOCLEAR_RAW_DATA != 0).to_string(),
            ));
        }
        let mut notes = Vec::new();
        if h.nb_snapshots > 0 {
            notes.push(format!(
                "{} internal snapshot(s) ignored; the active layer is read",
                h.nb_snapshots
            ));
        }
        if h.has_bitmaps {
            notes.push("persistent dirty bitmaps ignored".into());
        }
        ImageInfo {
            path: self.map.file().path().display().to_string(),
            format: "qcow2".into(),
            subformat: Some(
                if h.version == 2 {
                    "compat 0.10"
                } else {
                    "compat 1.1"
                }
                .into(),
            ),
            virtual_size: h.size,
            file_size: Some(self.map.file().len()),
            cluster_size: Some(h.cluster_size()),
            details,
            notes,
            backing: self.backing.as_ref().map(|b| Box::new(b.info())),
        }
    }
}
