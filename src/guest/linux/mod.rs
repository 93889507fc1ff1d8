//! Linux guest inspection: distribution, host name, architecture, fstab,
//! kernels and their virtio drivers, bootloader, hypervisor tools, packages
//! and network configuration, all read through a [`GuestRoot`].
//!
//! Missing files are normal (a field is `None` or empty); unreadable or
//! damaged ones become [`LinuxInfo::warnings`], never a failed inspection.

pub mod bootloader;
pub mod fstab;
pub mod kernels;
pub mod network;
pub mod os;
pub mod packages;
pub mod tools;

use crate::fs::guest::GuestRoot;
use crate::fs::{DirEntry, FileType};
use serde::Serialize;
use v2x_formats::{Error, Result};

/// Largest configuration file read.
pub const MAX_CONFIG_FILE: u64 = 1 << 20;

/// Most warnings kept (a badly damaged guest could produce many).
pub const MAX_WARNINGS: usize = 256;

/// Everything inspection learns about a Linux guest. Field names are stable (snake_case JSON).
#[derive(Debug, Clone, Default, Serialize)]
pub struct LinuxInfo {
    /// The distribution.
    pub os: Option<os::OsInfo>,
    /// The configured host name.
    pub hostname: Option<String>,
    /// CPU architecture from the ELF header of /bin/sh ("x86_64", "aarch64", ...).
    pub arch: Option<String>,
    /// /etc/fstab entries.
    pub fstab: Vec<fstab::FstabEntry>,
    /// /etc/crypttab entries.
    pub crypttab: Vec<fstab::CrypttabEntry>,
    /// Installed kernels and where their virtio drivers are.
    pub kernels: Vec<kernels::Kernel>,
    /// The bootloader, if one was recognised.
    pub bootloader: Option<bootloader::Bootloader>,
    /// Hypervisor guest tools found.
    pub hypervisor_tools: Vec<tools::HypervisorTool>,
    /// Package format, manager and installed packages.
    pub packages: packages::PackageSystem,
    /// Network configuration files.
    pub network: Vec<network::NetConfig>,
    /// Files that exist but could not be read or understood.
    pub warnings: Vec<String>,
}

/// What [`inspect_with`] does.
#[derive(Debug, Clone, Copy)]
pub struct InspectOptions {
    /// Decompress each kernel's initramfs to see which virtio drivers it holds
    /// (the slow part: tens of megabytes each).
    pub read_initramfs: bool,
}

impl Default for InspectOptions {
    fn default() -> Self {
        Self { read_initramfs: true }
    }
}

/// Inspects a Linux guest with default options.
pub fn inspect(root: &GuestRoot) -> Result<LinuxInfo> {
    inspect_with(root, InspectOptions::default())
}

/// Inspects a Linux guest. Fails only when the tree is not a Linux root at all.
pub fn inspect_with(root: &GuestRoot, opts: InspectOptions) -> Result<LinuxInfo> {
    if !is_linux_root(root) {
        return Err(Error::not_found(
            "no Linux root here (no /etc with os-release, fstab or /bin/sh)",
        ));
    }
    let mut ctx = Ctx {
        root,
        warnings: Vec::new(),
    };
    let os = os::detect(&mut ctx);
    let hostname = os::hostname(&mut ctx);
    let arch = os::arch(&mut ctx);
    let fstab = ctx
        .text("/etc/fstab")
        .map(|t| fstab::parse_fstab(&t))
        .unwrap_or_default();
    let crypttab = ctx
        .text("/etc/crypttab")
        .map(|t| fstab::parse_crypttab(&t))
        .unwrap_or_default();
    let kernels = kernels::detect(&mut ctx, opts.read_initramfs);
    let packages = packages::detect(&mut ctx);
    let bootloader = bootloader::detect(&mut ctx, &packages.installed);
    let hypervisor_tools = tools::detect(&mut ctx, &packages.installed);
    let network = network::detect(&mut ctx);
    Ok(LinuxInfo {
        os,
        hostname,
        arch,
        fstab,
        crypttab,
        kernels,
        bootloader,
        hypervisor_tools,
        packages,
        network,
        warnings: ctx.warnings,
    })
}

/// True when the tree looks like a Linux root: an /etc directory plus
/// os-release, an fstab or a /bin/sh.
pub fn is_linux_root(root: &GuestRoot) -> bool {
    let is = |p: &str, t: FileType| matches!(root.stat(p), Ok(m) if m.file_type == t);
    is("/etc", FileType::Dir)
        && ["/etc/os-release", "/usr/lib/os-release", "/etc/fstab", "/bin/sh"]
            .iter()
            .any(|p| is(p, FileType::File))
}

/// Inspection state: the tree and the warnings collected so far.
pub(crate) struct Ctx<'a> {
    pub root: &'a GuestRoot,
    pub warnings: Vec<String>,
}

impl Ctx<'_> {
    /// Records a problem with a file that exists.
    pub fn warn(&mut self, w: String) {
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(w);
        }
    }

    fn soft<T>(&mut self, path: &str, r: Result<T>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(Error::NotFound(_)) => None,
            Err(e) => {
                self.warn(format!("{path}: {e}"));
                None
            }
        }
    }

    /// A text file up to [`MAX_CONFIG_FILE`], `None` if absent or unreadable.
    pub fn text(&mut self, path: &str) -> Option<String> {
        self.text_max(path, MAX_CONFIG_FILE)
    }

    /// A text file up to `max` bytes.
    pub fn text_max(&mut self, path: &str, max: u64) -> Option<String> {
        let r = self.root.read_text_opt(path, max);
        self.soft(path, r).flatten()
    }

    /// Directory entries (symlinks followed for the directory), empty if absent.
    pub fn list(&mut self, dir: &str) -> Vec<DirEntry> {
        let r = self.root.read_dir(dir);
        self.soft(dir, r).unwrap_or_default()
    }

    /// Names of the files and symlinks in `dir`, at most `max` (with a warning past it).
    pub fn file_names(&mut self, dir: &str, max: usize) -> Vec<String> {
        let mut names: Vec<String> = self
            .list(dir)
            .into_iter()
            .filter(|e| e.file_type != FileType::Dir)
            .map(|e| e.name)
            .collect();
        if names.len() > max {
            self.warn(format!("{dir} has {} files, only {max} read", names.len()));
            names.truncate(max);
        }
        names
    }

    /// True when `path` exists (symlinks followed).
    pub fn exists(&mut self, path: &str) -> bool {
        let r = self.root.stat(path);
        self.soft(path, r).is_some()
    }

    /// True when `path` exists, even as a dangling symlink.
    pub fn lexists(&mut self, path: &str) -> bool {
        let r = self.root.lstat(path);
        self.soft(path, r).is_some()
    }

    /// True when `path` is a regular file (symlinks followed).
    pub fn is_file(&mut self, path: &str) -> bool {
        let r = self.root.stat(path);
        matches!(self.soft(path, r), Some(m) if m.file_type == FileType::File)
    }
}
