//! Which distribution, host name and CPU architecture a Linux guest has.

use super::Ctx;
use serde::Serialize;
use std::collections::BTreeMap;

/// Distribution facts, from os-release or an older release file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OsInfo {
    /// Lowercase distro id as os-release spells it ("debian", "rhel", "ubuntu", "sles", "alpine").
    pub id: String,
    /// Distros this one derives from (os-release ID_LIKE).
    pub id_like: Vec<String>,
    /// Human product name (PRETTY_NAME, else NAME, else the release file's first line).
    pub product_name: Option<String>,
    /// The version as written ("12", "9.3", "22.04", "3.19.1").
    pub version: Option<String>,
    /// Major version number.
    pub major: Option<u32>,
    /// Minor version number (0 when the version has only a major part).
    pub minor: Option<u32>,
    /// Release code name ("bookworm", "jammy", "Plow").
    pub codename: Option<String>,
    /// The guest file the facts came from.
    pub source: String,
}

/// Parses os-release (or lsb-release) text: `KEY=value` lines with shell
/// quoting and escapes; comments and malformed lines are ignored.
pub fn parse_os_release(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key.is_empty() || !key.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') {
            continue;
        }
        out.insert(key.to_string(), shell_value(value));
    }
    out
}

/// Unquotes one shell word: "double" (with `\` escapes of `"\$` and backquote),
/// 'single', and backslash escapes outside quotes. Stops at unquoted blanks.
pub fn shell_value(v: &str) -> String {
    let mut out = String::new();
    let mut chars = v.trim_start().chars().peekable();
    #[derive(PartialEq)]
    enum Q {
        None,
        Double,
        Single,
    }
    let mut q = Q::None;
    while let Some(c) = chars.next() {
        match q {
            Q::None => match c {
                '"' => q = Q::Double,
                '\'' => q = Q::Single,
                '\\' => {
                    if let Some(n) = chars.next() {
                        out.push(n);
                    }
                }
                c if c.is_whitespace() || c == '#' => break,
                c => out.push(c),
            },
            Q::Double => match c {
                '"' => q = Q::None,
                '\\' => match chars.peek() {
                    Some(&n) if matches!(n, '"' | '\\' | '$' | '`') => {
                        out.push(n);
                        chars.next();
                    }
                    _ => out.push('\\'),
                },
                c => out.push(c),
            },
            Q::Single => match c {
                '\'' => q = Q::None,
                c => out.push(c),
            },
        }
    }
    out
}

/// Splits "9.3", "22.04" or "3.19.1" into major and minor (minor 0 when absent).
pub fn split_version(v: &str) -> (Option<u32>, Option<u32>) {
    let mut parts = v.split(['.', '-', '_']);
    let num = |s: Option<&str>| -> Option<u32> {
        let s = s?;
        let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    let major = num(parts.next());
    let minor = major.map(|_| num(parts.next()).unwrap_or(0));
    (major, minor)
}

fn from_os_release(kv: &BTreeMap<String, String>, source: &str) -> Option<OsInfo> {
    let id = kv.get("ID")?.to_lowercase();
    let version = kv.get("VERSION_ID").cloned().filter(|v| !v.is_empty());
    let (major, minor) = version.as_deref().map(split_version).unwrap_or((None, None));
    let codename = ["VERSION_CODENAME", "UBUNTU_CODENAME"]
        .iter()
        .find_map(|k| kv.get(*k).filter(|v| !v.is_empty()).cloned())
        .or_else(|| kv.get("VERSION").and_then(|v| paren(v)));
    Some(OsInfo {
        id,
        id_like: kv
            .get("ID_LIKE")
            .map(|v| v.split_whitespace().map(str::to_lowercase).collect())
            .unwrap_or_default(),
        product_name: kv.get("PRETTY_NAME").or_else(|| kv.get("NAME")).cloned(),
        version,
        major,
        minor,
        codename,
        source: source.to_string(),
    })
}

/// The text between the first parentheses, if any ("12 (bookworm)" gives "bookworm").
fn paren(s: &str) -> Option<String> {
    let a = s.find('(')?;
    let b = s[a..].find(')')? + a;
    let inner = s[a + 1..b].trim();
    (!inner.is_empty()).then(|| inner.to_string())
}

/// Parses a Red Hat style release line ("CentOS Linux release 7.9.2009 (Core)").
pub fn parse_redhat_release(text: &str, source: &str) -> Option<OsInfo> {
    let line = text.lines().next()?.trim();
    const IDS: &[(&str, &str)] = &[
        ("Red Hat Enterprise Linux", "rhel"),
        ("CentOS Stream", "centos"),
        ("CentOS", "centos"),
        ("Fedora", "fedora"),
        ("Rocky Linux", "rocky"),
        ("AlmaLinux", "almalinux"),
        ("Oracle Linux", "ol"),
        ("Scientific Linux", "scientific"),
    ];
    let id = IDS.iter().find(|(p, _)| line.starts_with(p))?.1;
    let after = line.split(" release ").nth(1)?;
    let version = after.split_whitespace().next()?.to_string();
    let (major, minor) = split_version(&version);
    Some(OsInfo {
        id: id.to_string(),
        id_like: Vec::new(),
        product_name: Some(line.to_string()),
        version: Some(version),
        major,
        minor,
        codename: paren(after),
        source: source.to_string(),
    })
}

fn parse_suse_release(text: &str, source: &str) -> Option<OsInfo> {
    let first = text.lines().next()?.trim().to_string();
    let kv: BTreeMap<String, String> = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let major = kv.get("VERSION").and_then(|v| split_version(v).0);
    let minor = kv
        .get("PATCHLEVEL")
        .and_then(|v| v.parse().ok())
        .or(major.map(|_| 0));
    let id = if first.to_lowercase().contains("opensuse") {
        "opensuse"
    } else if first.contains("Desktop") {
        "sled"
    } else {
        "sles"
    };
    Some(OsInfo {
        id: id.into(),
        id_like: vec!["suse".into()],
        product_name: Some(first),
        version: major.map(|m| match minor {
            Some(n) if n > 0 => format!("{m}.{n}"),
            _ => m.to_string(),
        }),
        major,
        minor,
        codename: kv.get("CODENAME").cloned(),
        source: source.into(),
    })
}

fn parse_lsb_release(text: &str, source: &str) -> Option<OsInfo> {
    let kv = parse_os_release(text);
    let id = kv.get("DISTRIB_ID")?.to_lowercase();
    let version = kv.get("DISTRIB_RELEASE").cloned();
    let (major, minor) = version.as_deref().map(split_version).unwrap_or((None, None));
    Some(OsInfo {
        id,
        id_like: Vec::new(),
        product_name: kv.get("DISTRIB_DESCRIPTION").cloned(),
        version,
        major,
        minor,
        codename: kv.get("DISTRIB_CODENAME").cloned(),
        source: source.into(),
    })
}

fn parse_debian_version(text: &str, source: &str) -> Option<OsInfo> {
    let v = text.lines().next()?.trim().to_string();
    let (major, minor) = split_version(&v);
    Some(OsInfo {
        id: "debian".into(),
        product_name: Some(format!("Debian GNU/Linux {v}")),
        codename: major
            .is_none()
            .then(|| v.split('/').next().unwrap_or("").to_string()),
        version: Some(v),
        major,
        minor,
        source: source.into(),
        ..OsInfo::default()
    })
}

/// Finds the distribution: os-release first, then the older release files.
pub(crate) fn detect(ctx: &mut Ctx) -> Option<OsInfo> {
    for path in ["/etc/os-release", "/usr/lib/os-release"] {
        if let Some(t) = ctx.text(path) {
            if let Some(info) = from_os_release(&parse_os_release(&t), path) {
                return Some(info);
            }
            ctx.warn(format!("{path} has no ID= line"));
        }
    }
    type Parser = fn(&str, &str) -> Option<OsInfo>;
    let older: [(&str, Parser); 5] = [
        ("/etc/redhat-release", parse_redhat_release),
        ("/etc/centos-release", parse_redhat_release),
        ("/etc/SuSE-release", parse_suse_release),
        ("/etc/lsb-release", parse_lsb_release),
        ("/etc/debian_version", parse_debian_version),
    ];
    for (path, parse) in older {
        if let Some(t) = ctx.text(path) {
            if let Some(info) = parse(&t, path) {
                return Some(info);
            }
        }
    }
    None
}

/// Finds the host name in /etc/hostname, /etc/HOSTNAME or /etc/sysconfig/network.
pub(crate) fn hostname(ctx: &mut Ctx) -> Option<String> {
    for path in ["/etc/hostname", "/etc/HOSTNAME"] {
        if let Some(t) = ctx.text(path) {
            let name = t
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('#'));
            if let Some(n) = name {
                return Some(n.to_string());
            }
        }
    }
    let t = ctx.text("/etc/sysconfig/network")?;
    parse_os_release(&t).remove("HOSTNAME").filter(|h| !h.is_empty())
}

/// The architecture name for an ELF header (the first 64 bytes of a binary).
pub fn elf_arch(h: &[u8]) -> Option<&'static str> {
    if h.len() < 20 || &h[..4] != b"\x7fELF" {
        return None;
    }
    let is64 = h[4] == 2;
    let le = h[5] == 1;
    let machine = if le {
        u16::from_le_bytes([h[18], h[19]])
    } else {
        u16::from_be_bytes([h[18], h[19]])
    };
    Some(match (machine, is64, le) {
        (3, _, _) => "i386",
        (62, _, _) => "x86_64",
        (183, _, _) => "aarch64",
        (40, _, _) => "arm",
        (20, _, _) => "ppc",
        (21, _, true) => "ppc64le",
        (21, _, false) => "ppc64",
        (22, true, _) => "s390x",
        (22, false, _) => "s390",
        (243, true, _) => "riscv64",
        (243, false, _) => "riscv32",
        (8, true, true) => "mips64el",
        (8, true, false) => "mips64",
        (8, false, true) => "mipsel",
        (8, false, false) => "mips",
        (258, _, _) => "loongarch64",
        _ => return None,
    })
}

/// The guest's architecture, from the ELF header of its shell (symlinks followed).
pub(crate) fn arch(ctx: &mut Ctx) -> Option<String> {
    for path in ["/bin/sh", "/usr/bin/sh", "/bin/bash", "/bin/busybox", "/bin/ls"] {
        match ctx.root.read_range(path, 0, 64) {
            Ok(h) => match elf_arch(&h) {
                Some(a) => return Some(a.to_string()),
                None => ctx.warn(format!("{path} is not an ELF binary of a known machine")),
            },
            Err(v2x_formats::Error::NotFound(_)) => {}
            Err(e) => ctx.warn(format!("reading {path}: {e}")),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_quoting() {
        let kv = parse_os_release(
            "# comment\nNAME=\"Debian GNU/Linux\"\nID=debian\nPRETTY_NAME='Debian 12'\n\
             X=\"a \\\"q\\\" \\$HOME \\n\"\nY=un\\ quoted # trailing\nbad line\n =x\n",
        );
        assert_eq!(kv["NAME"], "Debian GNU/Linux");
        assert_eq!(kv["PRETTY_NAME"], "Debian 12");
        assert_eq!(kv["X"], "a \"q\" $HOME \\n");
        assert_eq!(kv["Y"], "un quoted");
        assert_eq!(kv.len(), 5);
    }

    #[test]
    fn versions() {
        assert_eq!(split_version("9.3"), (Some(9), Some(3)));
        assert_eq!(split_version("22.04"), (Some(22), Some(4)));
        assert_eq!(split_version("12"), (Some(12), Some(0)));
        assert_eq!(split_version("rolling"), (None, None));
    }

    #[test]
    fn old_release_files() {
        let c = parse_redhat_release("CentOS Linux release 7.9.2009 (Core)\n", "/x").unwrap();
        assert_eq!((c.id.as_str(), c.major, c.minor), ("centos", Some(7), Some(9)));
        assert_eq!(c.codename.as_deref(), Some("Core"));
        let r =
            parse_redhat_release("Red Hat Enterprise Linux Server release 6.10 (Santiago)", "/x").unwrap();
        assert_eq!((r.id.as_str(), r.major, r.minor), ("rhel", Some(6), Some(10)));
        let s = parse_suse_release(
            "SUSE Linux Enterprise Server 11 (x86_64)\nVERSION = 11\nPATCHLEVEL = 4\n",
            "/x",
        )
        .unwrap();
        assert_eq!((s.id.as_str(), s.version.as_deref()), ("sles", Some("11.4")));
        let d = parse_debian_version("bookworm/sid\n", "/x").unwrap();
        assert_eq!((d.major, d.codename.as_deref()), (None, Some("bookworm")));
        let u = parse_lsb_release(
            "DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE=14.04\nDISTRIB_CODENAME=trusty\nDISTRIB_DESCRIPTION=\"Ubuntu 14.04.6 LTS\"\n",
            "/x",
        )
        .unwrap();
        assert_eq!((u.id.as_str(), u.major, u.minor), ("ubuntu", Some(14), Some(4)));
    }

    #[test]
    fn elf_machines() {
        let mut h = [0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[18] = 62;
        assert_eq!(elf_arch(&h), Some("x86_64"));
        h[18] = 183;
        assert_eq!(elf_arch(&h), Some("aarch64"));
        h[5] = 2;
        h[18] = 0;
        h[19] = 22;
        assert_eq!(elf_arch(&h), Some("s390x"));
        assert_eq!(elf_arch(b"#!/bin/sh\n"), None);
    }
}
