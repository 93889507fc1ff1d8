//! Package format and manager, and the installed packages where the database
//! is plain text (dpkg, apk) or a directory listing (pacman). rpm databases
//! (Berkeley DB, NDB, SQLite) are only detected.

use super::Ctx;
use serde::Serialize;

/// Most installed packages listed.
pub const MAX_PACKAGES: usize = 65536;

/// Largest package database text read.
pub const MAX_PACKAGE_DB: u64 = 64 << 20;

/// Which package system the guest uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PackageSystem {
    /// Package format: "deb", "rpm", "pacman", "apk"; `None` when unknown.
    pub format: Option<String>,
    /// Package manager front end: "apt", "dnf", "yum", "zypper", "pacman", "apk".
    pub manager: Option<String>,
    /// Installed packages (empty where the database is not read, e.g. rpm).
    pub installed: Vec<Package>,
    /// True when the list was cut at [`MAX_PACKAGES`].
    pub truncated: bool,
}

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Package {
    /// Package name.
    pub name: String,
    /// Version as the database writes it.
    pub version: String,
}

/// Formats, each recognised by its database path.
const FORMATS: &[(&str, &str)] = &[
    ("deb", "/var/lib/dpkg/status"),
    ("rpm", "/var/lib/rpm"),
    ("rpm", "/usr/lib/sysimage/rpm"),
    ("pacman", "/var/lib/pacman/local"),
    ("apk", "/lib/apk/db/installed"),
];

/// Managers in order of preference, each recognised by a path.
const MANAGERS: &[(&str, &str, &str)] = &[
    ("deb", "apt", "/usr/bin/apt-get"),
    ("deb", "apt", "/etc/apt"),
    ("rpm", "dnf", "/usr/bin/dnf"),
    ("rpm", "dnf", "/usr/bin/dnf5"),
    ("rpm", "zypper", "/usr/bin/zypper"),
    ("rpm", "yum", "/usr/bin/yum"),
    ("rpm", "dnf", "/etc/dnf"),
    ("rpm", "zypper", "/etc/zypp"),
    ("rpm", "yum", "/etc/yum.conf"),
    ("pacman", "pacman", "/usr/bin/pacman"),
    ("apk", "apk", "/sbin/apk"),
];

/// Parses /var/lib/dpkg/status: installed packages only ("install ok installed").
pub fn parse_dpkg_status(text: &str) -> Vec<Package> {
    let mut out = Vec::new();
    for para in text.split("\n\n") {
        let (mut name, mut version, mut installed) = (None, None, false);
        for line in para.lines() {
            if let Some(v) = line.strip_prefix("Package:") {
                name = Some(v.trim());
            } else if let Some(v) = line.strip_prefix("Version:") {
                version = Some(v.trim());
            } else if let Some(v) = line.strip_prefix("Status:") {
                installed = v.split_whitespace().last() == Some("installed");
            }
        }
        if let (Some(n), true) = (name, installed) {
            out.push(Package {
                name: n.to_string(),
                version: version.unwrap_or("").to_string(),
            });
        }
    }
    out
}

/// Parses apk's /lib/apk/db/installed (`P:` name and `V:` version lines).
pub fn parse_apk_installed(text: &str) -> Vec<Package> {
    let mut out = Vec::new();
    for para in text.split("\n\n") {
        let mut name = None;
        let mut version = "";
        for line in para.lines() {
            if let Some(v) = line.strip_prefix("P:") {
                name = Some(v);
            } else if let Some(v) = line.strip_prefix("V:") {
                version = v;
            }
        }
        if let Some(n) = name {
            out.push(Package {
                name: n.to_string(),
                version: version.to_string(),
            });
        }
    }
    out
}

/// Splits a pacman local db directory name ("open-vm-tools-6:12.3.5-1") into name and version-release.
pub fn split_pacman_dir(dir: &str) -> Option<Package> {
    let rel = dir.rfind('-')?;
    let ver = dir[..rel].rfind('-')?;
    Some(Package {
        name: dir[..ver].to_string(),
        version: dir[ver + 1..].to_string(),
    })
}

pub(crate) fn detect(ctx: &mut Ctx) -> PackageSystem {
    let mut sys = PackageSystem::default();
    let Some(&(format, db)) = FORMATS.iter().find(|(_, p)| ctx.exists(p)) else {
        return sys;
    };
    sys.format = Some(format.to_string());
    sys.manager = MANAGERS
        .iter()
        .find(|(f, _, p)| *f == format && ctx.exists(p))
        .map(|(_, m, _)| m.to_string());
    let mut list = match format {
        "deb" => ctx
            .text_max(db, MAX_PACKAGE_DB)
            .map(|t| parse_dpkg_status(&t))
            .unwrap_or_default(),
        "apk" => ctx
            .text_max(db, MAX_PACKAGE_DB)
            .map(|t| parse_apk_installed(&t))
            .unwrap_or_default(),
        "pacman" => ctx
            .list(db)
            .iter()
            .filter_map(|e| split_pacman_dir(&e.name))
            .collect(),
        _ => Vec::new(),
    };
    if list.len() > MAX_PACKAGES {
        list.truncate(MAX_PACKAGES);
        sys.truncated = true;
    }
    sys.installed = list;
    sys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_status() {
        let t = "Package: open-vm-tools\nStatus: install ok installed\nVersion: 2:12.2.0-1\nDescription: x\n y\n\n\
                 Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n\n\
                 Package: bash\nStatus: install ok installed\nVersion: 5.2.15-2+b2\n";
        let p = parse_dpkg_status(t);
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[0].name.as_str(), p[0].version.as_str()),
            ("open-vm-tools", "2:12.2.0-1")
        );
        assert_eq!(p[1].name, "bash");
    }

    #[test]
    fn apk_and_pacman() {
        let p = parse_apk_installed("C:x\nP:musl\nV:1.2.4-r2\n\nP:open-vm-tools\nV:12.3.5-r0\n");
        assert_eq!(
            p[1],
            Package {
                name: "open-vm-tools".into(),
                version: "12.3.5-r0".into()
            }
        );
        assert_eq!(
            split_pacman_dir("open-vm-tools-6:12.3.5-1"),
            Some(Package {
                name: "open-vm-tools".into(),
                version: "6:12.3.5-1".into()
            })
        );
        assert_eq!(split_pacman_dir("nodash"), None);
    }
}
