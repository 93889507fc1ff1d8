//! Which operating system a tree holds, and the facts inspection reports
//! about it. The per-OS work lives in `guest::linux` and `guest::windows`.

use crate::fs::guest::GuestRoot;
use v2x_formats::Result;

/// The operating-system families v2x recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OsKind {
    /// A Linux root filesystem.
    Linux,
    /// A Windows system volume.
    Windows,
}

impl OsKind {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            OsKind::Linux => "linux",
            OsKind::Windows => "windows",
        }
    }
}

/// What inspection learned about one root.
#[derive(Debug, Default)]
pub struct OsFacts {
    /// Distribution id.
    pub distro: Option<String>,
    /// Version.
    pub version: Option<String>,
    /// Product name.
    pub product_name: Option<String>,
    /// CPU architecture.
    pub arch: Option<String>,
    /// Hostname.
    pub hostname: Option<String>,
    /// Linux details.
    pub linux: Option<serde_json::Value>,
    /// Windows details.
    pub windows: Option<serde_json::Value>,
    /// Problems found while reading.
    pub warnings: Vec<String>,
}

/// Decides whether `tree` is the root of an OS we know.
pub fn detect(tree: &GuestRoot) -> Result<Option<OsKind>> {
    if tree
        .resolve_case_insensitive("/Windows/System32/config/SYSTEM")?
        .is_some()
    {
        return Ok(Some(OsKind::Windows));
    }
    let has_etc = tree.exists("/etc")?;
    if has_etc
        && (tree.exists("/etc/os-release")?
            || tree.exists("/etc/fstab")?
            || tree.exists("/usr/lib/os-release")?)
    {
        return Ok(Some(OsKind::Linux));
    }
    Ok(None)
}

/// Gathers the facts about a root of the given kind.
pub fn gather(kind: OsKind, tree: &GuestRoot) -> Result<OsFacts> {
    let _ = (kind, tree);
    Ok(OsFacts::default())
}
