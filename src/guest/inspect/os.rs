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
    if crate::guest::linux::is_linux_root(tree) {
        return Ok(Some(OsKind::Linux));
    }
    Ok(None)
}

/// Gathers the facts about a root of the given kind.
pub fn gather(kind: OsKind, tree: &GuestRoot) -> Result<OsFacts> {
    match kind {
        OsKind::Linux => linux(tree),
        OsKind::Windows => windows(tree),
    }
}

fn linux(tree: &GuestRoot) -> Result<OsFacts> {
    let info = crate::guest::linux::inspect(tree)?;
    let os = info.os.as_ref();
    let mut details = serde_json::to_value(&info).map_err(|e| v2x_formats::Error::invalid(e.to_string()))?;
    // The full package list is long; the report keeps its size, and the
    // tools/kernels sections already name the packages that matter.
    if let Some(pk) = details.get_mut("packages").and_then(|p| p.as_object_mut()) {
        let n = pk.get("installed").and_then(|i| i.as_array()).map_or(0, Vec::len);
        pk.remove("installed");
        pk.insert("installed_count".into(), n.into());
    }
    Ok(OsFacts {
        distro: os.map(|o| o.id.clone()),
        version: os.and_then(|o| o.version.clone()),
        product_name: os.and_then(|o| o.product_name.clone()),
        arch: info.arch.clone(),
        hostname: info.hostname.clone(),
        warnings: info.warnings.clone(),
        linux: Some(details),
        windows: None,
    })
}

fn windows(tree: &GuestRoot) -> Result<OsFacts> {
    let info = crate::guest::windows::inspect(tree)?;
    let version = match (info.major_version, info.minor_version) {
        (Some(a), Some(b)) => Some(format!("{a}.{b}")),
        _ => None,
    };
    let details = serde_json::to_value(&info).map_err(|e| v2x_formats::Error::invalid(e.to_string()))?;
    Ok(OsFacts {
        distro: Some("windows".into()),
        version,
        product_name: info.product_variant.clone().or_else(|| info.product_name.clone()),
        arch: info.arch.clone(),
        hostname: info.hostname.clone(),
        warnings: info.notes.clone(),
        linux: None,
        windows: Some(details),
    })
}
