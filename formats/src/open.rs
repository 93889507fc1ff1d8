//! Opening an image: detect, then dispatch to the format's opener. Also the
//! policy for following backing files, shared by every format with chains.

use crate::block::BlockSource;
use crate::detect::{detect, Format, HEAD_LEN, TAIL_LEN};
use crate::error::{Error, Result};
use crate::file::HostFile;
use crate::{qcow2, raw, vdi, vhd, vhdx, vmdk};
use std::path::{Component, Path, PathBuf};

/// Deepest backing chain we follow (the image itself is depth 0).
pub const MAX_CHAIN_DEPTH: u32 = 64;

/// Which backing files an image may pull in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackingPolicy {
    /// Only files inside the top image's directory, or one of these directories.
    Within(Vec<PathBuf>),
    /// Any path the image names (the user said `--allow-backing any`).
    Any,
    /// No backing files at all: an image that needs one is refused.
    Refuse,
}

impl Default for BackingPolicy {
    fn default() -> Self {
        BackingPolicy::Within(Vec::new())
    }
}

/// How to open an image and its chain.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Skip detection and open as this format (`-f`).
    pub format: Option<Format>,
    /// Which backing files may be followed.
    pub backing: BackingPolicy,
    /// Maximum chain depth; capped at [`MAX_CHAIN_DEPTH`].
    pub max_chain_depth: u32,
    /// Allow qcow2 external data files.
    pub allow_external_data: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            format: None,
            backing: BackingPolicy::default(),
            max_chain_depth: 16,
            allow_external_data: false,
        }
    }
}

/// Reads the head and tail of a file and names its format.
pub fn probe(file: &HostFile) -> Result<Format> {
    let head_len = file.len().min(HEAD_LEN as u64) as usize;
    let head = file.read_vec(0, head_len)?;
    let tail_len = file.len().min(TAIL_LEN as u64) as usize;
    let tail = file.read_vec(file.len() - tail_len as u64, tail_len)?;
    Ok(detect(&head, &tail))
}

/// Opens the image at `path` read-only, with its backing chain.
pub fn open_image(path: &Path, opts: &OpenOptions) -> Result<Box<dyn BlockSource>> {
    let opener = Opener::new(path, opts)?;
    opener.open(path, opts.format, 0)
}

/// Opens a byte range of a host file ([`HostFile::open_range`], an OVA
/// member) as an image: detection unless `opts.format` says, then the
/// format's opener. A member stands alone: backing files, external data
/// files and descriptors naming other extents are refused, since their
/// names would resolve beside the archive, not inside it.
pub fn open_member(file: HostFile, opts: &OpenOptions) -> Result<Box<dyn BlockSource>> {
    let opener = Opener {
        opts: OpenOptions {
            backing: BackingPolicy::Refuse,
            allow_external_data: false,
            ..opts.clone()
        },
        roots: Vec::new(),
    };
    opener.open_file(file, opts.format, 0)
}

/// Opens images of a chain, enforcing the backing policy and depth cap.
#[derive(Debug)]
pub struct Opener {
    opts: OpenOptions,
    /// Canonical directories backing files must lie in (for `Within`).
    roots: Vec<PathBuf>,
}

impl Opener {
    /// Prepares to open the chain whose top image is `top`.
    pub fn new(top: &Path, opts: &OpenOptions) -> Result<Self> {
        let mut roots = Vec::new();
        if let BackingPolicy::Within(dirs) = &opts.backing {
            let top_dir = parent_dir(top);
            for d in std::iter::once(top_dir).chain(dirs.iter().cloned()) {
                let c = d
                    .canonicalize()
                    .map_err(|e| Error::io(format!("resolving directory {}", d.display()), e))?;
                roots.push(c);
            }
        }
        Ok(Opener {
            opts: opts.clone(),
            roots,
        })
    }

    /// The options this chain is opened with.
    pub fn options(&self) -> &OpenOptions {
        &self.opts
    }

    /// Opens one image of the chain at `depth`, detecting its format unless given.
    pub fn open(&self, path: &Path, format: Option<Format>, depth: u32) -> Result<Box<dyn BlockSource>> {
        self.open_file(HostFile::open(path)?, format, depth)
    }

    /// Opens an already open file as one image of the chain at `depth`.
    pub fn open_file(
        &self,
        file: HostFile,
        format: Option<Format>,
        depth: u32,
    ) -> Result<Box<dyn BlockSource>> {
        let path = file.path().to_path_buf();
        let format = match format {
            Some(f) => f,
            None => probe(&file)?,
        };
        if format == Format::VmdkDescriptor && file.range_base().is_some() {
            return Err(Error::unsupported(format!(
                "{} is a VMDK descriptor inside an archive; extents stored as other \
                 archive members are not supported (extract the archive first)",
                path.display()
            )));
        }
        match format {
            Format::Raw => Ok(Box::new(raw::RawImage::new(file)?)),
            Format::Qcow2 => Ok(Box::new(qcow2::Qcow2Image::open(file, self, depth)?)),
            Format::Vhd => Ok(Box::new(vhd::VhdImage::open(file, self, depth)?)),
            Format::Vhdx => Ok(Box::new(vhdx::VhdxImage::open(file, self, depth)?)),
            Format::Vdi => Ok(Box::new(vdi::VdiImage::open(file)?)),
            Format::VmdkSparse | Format::VmdkCowd | Format::VmdkDescriptor => {
                Ok(Box::new(vmdk::VmdkImage::open(file, format, self, depth)?))
            }
            Format::OutOfScope(f) => Err(Error::unsupported(format!(
                "{} is a {f} image; v2x does not convert that format",
                path.display()
            ))),
        }
    }

    /// Resolves and opens the backing file `name` named by the image at
    /// `child` (which sits at chain depth `depth`). `format` is the backing
    /// format the child declares, if any; a declared format is trusted over
    /// probing.
    pub fn open_backing(
        &self,
        child: &Path,
        name: &str,
        format: Option<Format>,
        depth: u32,
    ) -> Result<Box<dyn BlockSource>> {
        let next = depth + 1;
        let cap = self.opts.max_chain_depth.min(MAX_CHAIN_DEPTH);
        if next > cap {
            return Err(Error::LimitExceeded {
                what: "backing chain depth",
                value: u64::from(next),
                max: u64::from(cap),
            });
        }
        let path = self.resolve_backing(child, name)?;
        self.open(&path, format, next)
    }

    /// Turns a backing-file name into a path and checks it against the policy.
    pub fn resolve_backing(&self, child: &Path, name: &str) -> Result<PathBuf> {
        if name.is_empty() || name.contains('\0') {
            return Err(Error::corrupt(
                format!("{}: empty backing file name", child.display()),
                0,
            ));
        }
        if name.contains("://") || name.starts_with("json:") {
            return Err(Error::unsupported(format!(
                "{}: backing file '{name}' is a protocol URL, not a local file",
                child.display()
            )));
        }
        let raw = Path::new(name);
        let joined = if raw.is_absolute() {
            raw.to_path_buf()
        } else {
            parent_dir(child).join(raw)
        };
        if self.opts.backing == BackingPolicy::Refuse {
            return Err(Error::Denied(format!(
                "{} needs backing file '{name}', and backing files are not allowed",
                child.display()
            )));
        }
        let canon = joined.canonicalize().map_err(|e| {
            Error::io(
                format!(
                    "opening backing file '{name}' of {} (looked for {})",
                    child.display(),
                    joined.display()
                ),
                e,
            )
        })?;
        if let BackingPolicy::Within(_) = self.opts.backing {
            if !self.roots.iter().any(|r| canon.starts_with(r)) {
                return Err(Error::Denied(format!(
                    "{}: backing file '{name}' resolves to {}, outside the allowed directories ({}); \
                     use --allow-backing DIR or --allow-backing any",
                    child.display(),
                    canon.display(),
                    self.roots
                        .iter()
                        .map(|r| r.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        check_disk_file(&canon, child, "backing file", name)?;
        Ok(canon)
    }
}

impl Opener {
    /// Resolves the extent file `name` named by the VMDK descriptor at
    /// `descriptor`. Extents are part of the image, not backing files, so
    /// even [`BackingPolicy::Refuse`] allows them; but like backing files
    /// they must stay inside the descriptor's directory (or a directory the
    /// user allowed) unless the user said `--allow-backing any`.
    pub fn resolve_extent(&self, descriptor: &Path, name: &str) -> Result<PathBuf> {
        if name.is_empty() || name.contains('\0') {
            return Err(Error::corrupt(
                format!("{}: empty extent file name", descriptor.display()),
                0,
            ));
        }
        self.resolve_part(descriptor, Path::new(name), "extent")
    }

    /// Resolves `target`, a file that is part of what `referrer` describes
    /// (a VMDK extent, a disk of a VMX or OVF), under the rules of
    /// [`Opener::resolve_extent`]: relative to the referrer's directory,
    /// canonical, a regular file or block device, and inside the referrer's
    /// directory or an allowed one unless the policy is
    /// [`BackingPolicy::Any`]. `role` names the file in errors.
    pub fn resolve_part(&self, referrer: &Path, target: &Path, role: &str) -> Result<PathBuf> {
        let name = target.display();
        let dir = parent_dir(referrer);
        let joined = if target.is_absolute() {
            target.to_path_buf()
        } else {
            dir.join(target)
        };
        let canon = joined.canonicalize().map_err(|e| {
            Error::io(
                format!(
                    "opening {role} '{name}' of {} (looked for {})",
                    referrer.display(),
                    joined.display()
                ),
                e,
            )
        })?;
        check_disk_file(&canon, referrer, role, &name.to_string())?;
        if self.opts.backing == BackingPolicy::Any {
            return Ok(canon);
        }
        let own = dir
            .canonicalize()
            .map_err(|e| Error::io(format!("resolving directory {}", dir.display()), e))?;
        if canon.starts_with(&own) || self.roots.iter().any(|r| canon.starts_with(r)) {
            return Ok(canon);
        }
        Err(Error::Denied(format!(
            "{}: {role} '{name}' resolves to {}, outside {}'s directory; \
             use --allow-backing DIR or --allow-backing any",
            referrer.display(),
            canon.display(),
            referrer
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        )))
    }
}

/// Refuses anything but a regular file or block device: a FIFO would block
/// the open forever, and a socket or character device is no disk.
fn check_disk_file(path: &Path, referrer: &Path, role: &str, name: &str) -> Result<()> {
    let meta =
        std::fs::metadata(path).map_err(|e| Error::io(format!("inspecting {role} {}", path.display()), e))?;
    let ft = meta.file_type();
    if ft.is_file() || std::os::unix::fs::FileTypeExt::is_block_device(&ft) {
        Ok(())
    } else {
        Err(Error::Denied(format!(
            "{}: {role} '{name}' ({}) is not a regular file or block device",
            referrer.display(),
            path.display()
        )))
    }
}

/// The directory holding `path` ("." for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if p.components().next().is_some() => p.to_path_buf(),
        _ => PathBuf::from(Component::CurDir.as_os_str()),
    }
}
