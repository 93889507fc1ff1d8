//! Opening a VM's disks wherever their bytes are: a host file, an OVA
//! member read in place, or a gzip-compressed OVA member expanded into a
//! scratch file first.

use super::{DiskLocation, VmDisk};
use flate2::read::MultiGzDecoder;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use v2x_formats::block::BlockSource;
use v2x_formats::detect::Format;
use v2x_formats::file::{member_path, HostFile};
use v2x_formats::open::{open_member, probe, OpenOptions};
use v2x_formats::{Error, Result};

/// Largest size a gzip member may expand to when the OVF states no capacity.
pub const MAX_GUNZIPPED_BYTES: u64 = 64 << 40;
/// Compressed bytes read per `pread`, and expanded bytes written per write.
const GUNZIP_CHUNK: usize = 1 << 20;
/// Expanded blocks of this size that are all zero are left as holes.
const HOLE_BLOCK: usize = 64 << 10;

/// Opens the disk at `loc`. A gzip member is expanded into an anonymous
/// file in `scratch` (required then), capped at [`MAX_GUNZIPPED_BYTES`].
/// A blank disk is the caller's to create: asking to open one is invalid.
pub fn open_location(
    loc: &DiskLocation,
    opts: &OpenOptions,
    scratch: Option<&Path>,
) -> Result<Box<dyn BlockSource>> {
    open_with_limit(loc, opts, scratch, MAX_GUNZIPPED_BYTES)
}

/// Like [`open_location`], with a gzip member capped by what the disk's
/// stated capacity allows ([`gunzip_limit`]).
pub fn open_disk(disk: &VmDisk, opts: &OpenOptions, scratch: Option<&Path>) -> Result<Box<dyn BlockSource>> {
    open_with_limit(&disk.location, opts, scratch, gunzip_limit(disk.capacity))
}

/// The most bytes a gzip member holding a disk of `capacity` may expand to:
/// the capacity plus room for image metadata (a streamOptimized VMDK of
/// incompressible data is about 1% larger than its disk).
pub fn gunzip_limit(capacity: Option<u64>) -> u64 {
    match capacity {
        Some(c) => c
            .saturating_add(c / 32)
            .saturating_add(64 << 20)
            .min(MAX_GUNZIPPED_BYTES),
        None => MAX_GUNZIPPED_BYTES,
    }
}

fn open_with_limit(
    loc: &DiskLocation,
    opts: &OpenOptions,
    scratch: Option<&Path>,
    limit: u64,
) -> Result<Box<dyn BlockSource>> {
    match loc {
        DiskLocation::File { path } => v2x_formats::open_image(path, opts),
        DiskLocation::Member {
            tar,
            member,
            offset,
            len,
            gzip: false,
        } => open_member(HostFile::open_range(tar, member, *offset, *len)?, opts),
        DiskLocation::Member {
            tar,
            member,
            offset,
            len,
            gzip: true,
        } => {
            let dir = scratch.ok_or_else(|| {
                Error::invalid(format!(
                    "{} is gzip-compressed and no scratch directory was given to expand it in",
                    member_path(tar, member).display()
                ))
            })?;
            let file = gunzip_member(tar, member, *offset, *len, dir, limit)?;
            open_expanded(file, opts)
        }
        DiskLocation::Blank => Err(Error::invalid(
            "a blank disk has no image to open; it is created empty",
        )),
    }
}

/// Opens an expanded gzip member. Like any member it stands alone, so a
/// VMDK descriptor (whose extents would be other members) is unsupported.
pub fn open_expanded(file: HostFile, opts: &OpenOptions) -> Result<Box<dyn BlockSource>> {
    let format = match opts.format {
        Some(f) => f,
        None => probe(&file)?,
    };
    if format == Format::VmdkDescriptor {
        return Err(Error::unsupported(format!(
            "{} is a VMDK descriptor; extents stored as other archive members are not supported",
            file.path().display()
        )));
    }
    let opts = OpenOptions {
        format: Some(format),
        ..opts.clone()
    };
    open_member(file, &opts)
}

/// Expands the gzip-compressed member at `offset`, `len` bytes of `tar`,
/// into an anonymous file in `dir` (gone once closed), streaming with
/// bounded memory and leaving zero blocks as holes. More than `limit`
/// expanded bytes is refused.
pub fn gunzip_member(
    tar: &Path,
    member: &str,
    offset: u64,
    len: u64,
    dir: &Path,
    limit: u64,
) -> Result<HostFile> {
    let src = HostFile::open_range(tar, member, offset, len)?;
    let name = src.path().to_path_buf();
    let out = tempfile::tempfile_in(dir).map_err(|e| {
        Error::io(
            format!(
                "creating a scratch file in {} to expand {}",
                dir.display(),
                name.display()
            ),
            e,
        )
    })?;
    let reader = std::io::BufReader::with_capacity(GUNZIP_CHUNK, RangeReader { file: &src, pos: 0 });
    let mut gz = MultiGzDecoder::new(reader);
    let mut buf = vec![0u8; GUNZIP_CHUNK];
    let mut total = 0u64;
    loop {
        let n = fill(&mut gz, &mut buf).map_err(|e| gzip_error(e, &name))?;
        if n == 0 {
            break;
        }
        let end = total
            .checked_add(n as u64)
            .filter(|&e| e <= limit)
            .ok_or(Error::LimitExceeded {
                what: "expanded size of a gzip member",
                value: total.saturating_add(n as u64),
                max: limit,
            })?;
        for (i, block) in buf[..n].chunks(HOLE_BLOCK).enumerate() {
            if block.iter().all(|&b| b == 0) {
                continue;
            }
            let at = total + (i * HOLE_BLOCK) as u64;
            out.write_all_at(block, at).map_err(|e| {
                Error::io(
                    format!("writing the expanded {} to {}", name.display(), dir.display()),
                    e,
                )
            })?;
        }
        total = end;
    }
    out.set_len(total)
        .map_err(|e| Error::io(format!("sizing the expanded {}", name.display()), e))?;
    let mut shown = name.into_os_string();
    shown.push(" (gunzipped)");
    HostFile::from_file(out, Path::new(&shown))
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A decoder error: our own read error passed back through, else corrupt gzip data.
fn gzip_error(e: std::io::Error, name: &Path) -> Error {
    if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
        if let Some(inner) = e.into_inner() {
            if let Ok(ours) = inner.downcast::<Error>() {
                return *ours;
            }
        }
        return Error::corrupt(format!("{}: unreadable gzip data", name.display()), 0);
    }
    Error::corrupt(format!("{}: bad gzip data: {e}", name.display()), 0)
}

/// `Read` over a [`HostFile`], from its start.
struct RangeReader<'a> {
    file: &'a HostFile,
    pos: u64,
}

impl Read for RangeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.len().saturating_sub(self.pos).min(buf.len() as u64) as usize;
        self.file
            .read_exact_at(self.pos, &mut buf[..n])
            .map_err(std::io::Error::other)?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use std::io::Write;

    /// A file holding `pad` junk bytes then the gzip of `data`; returns it and the gzip length.
    fn gz_file(data: &[u8], pad: usize) -> (tempfile::NamedTempFile, u64) {
        let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).unwrap();
        let gz = enc.finish().unwrap();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&vec![0xee; pad]).unwrap();
        f.write_all(&gz).unwrap();
        f.write_all(&[0xee; 700]).unwrap();
        f.flush().unwrap();
        (f, gz.len() as u64)
    }

    fn disk_bytes() -> Vec<u8> {
        let mut d = vec![0u8; 3 << 20];
        d[..4096]
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = (i % 13) as u8 + 1);
        d[(2 << 20) + 5] = 9;
        d
    }

    #[test]
    fn gzip_member_round_trips() {
        let data = disk_bytes();
        let (f, gzlen) = gz_file(&data, 1024);
        let dir = tempfile::tempdir().unwrap();
        let loc = DiskLocation::Member {
            tar: f.path().to_path_buf(),
            member: "disk.img.gz".into(),
            offset: 1024,
            len: gzlen,
            gzip: true,
        };
        let img = open_location(&loc, &OpenOptions::default(), Some(dir.path())).unwrap();
        assert_eq!(img.size(), data.len() as u64);
        let mut back = vec![0u8; data.len()];
        img.read_at(0, &mut back).unwrap();
        assert!(back == data);
        assert!(img.info().path.contains("!disk.img.gz"), "{}", img.info().path);
        // Needs a scratch directory.
        assert!(matches!(
            open_location(&loc, &OpenOptions::default(), None).map(|_| ()),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn gzip_expansion_is_capped() {
        let data = disk_bytes();
        let (f, gzlen) = gz_file(&data, 0);
        let dir = tempfile::tempdir().unwrap();
        let e = gunzip_member(f.path(), "d.gz", 0, gzlen, dir.path(), (2 << 20) + 1).unwrap_err();
        assert!(
            matches!(e, Error::LimitExceeded { max, .. } if max == (2 << 20) + 1),
            "{e}"
        );
        assert_eq!(gunzip_limit(Some(1 << 30)), (1 << 30) + (1 << 25) + (64 << 20));
        assert_eq!(gunzip_limit(None), MAX_GUNZIPPED_BYTES);
    }

    #[test]
    fn bad_gzip_is_corrupt() {
        let (f, gzlen) = gz_file(&disk_bytes(), 0);
        let dir = tempfile::tempdir().unwrap();
        // Cut short: the decoder meets the member's end mid-stream.
        let e = gunzip_member(f.path(), "d.gz", 0, gzlen / 2, dir.path(), MAX_GUNZIPPED_BYTES).unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        let e = gunzip_member(f.path(), "d.gz", 1, gzlen, dir.path(), MAX_GUNZIPPED_BYTES).unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    }

    #[test]
    fn blank_is_invalid() {
        let r = open_location(&DiskLocation::Blank, &OpenOptions::default(), None);
        assert!(matches!(r.map(|_| ()), Err(Error::Invalid(_))));
    }
}
