//! VMware .vmx files -> [`VmSpec`].
//!
//! A VMX is `key = "value"` lines; keys are case-insensitive, `#` starts a
//! comment, and VMware writes awkward bytes as `|XX` (two hex digits: `|22`
//! is `"`, `|7C` is `|`). Disk order: the disks named by `bios.hddOrder` come
//! first, in its order; the rest follow by bus (SCSI, SATA, NVMe, IDE), then
//! controller, then unit. That puts `scsi0:0` (the disk VMware's wizards
//! create first and boot from) first on ordinary machines.

use super::ovf::{has_scheme, read_descriptor};
use super::{
    file_stem_name, normalize_mac, DiskLocation, Firmware, SourceKind, VmDisk, VmNic, VmSpec,
    DEFAULT_MEMORY_MIB, MAX_DISKS, MAX_MEMORY_MIB, MAX_NICS, MAX_VCPUS,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use v2x_formats::error::check_limit;
use v2x_formats::{Error, Result};

/// Most `key = value` entries one VMX may hold.
pub const MAX_VMX_ENTRIES: usize = 100_000;
/// Highest controller or unit number accepted in a device name (`scsi3:15`, `sata3:29`).
const MAX_DEVICE_INDEX: u32 = 255;

/// Disk buses in boot order, with their VMX key prefix.
const BUSES: [&str; 4] = ["scsi", "sata", "nvme", "ide"];

/// Reads the VMX at `path`; disk descriptors are resolved in its directory.
///
/// A VMX written on ESXi names disks on other datastores by absolute path
/// (`/vmfs/volumes/...`), and one written by Workstation on Windows by drive
/// path (`D:\VMs\...`). When such a file does not exist here but a file of
/// the same name lies beside the VMX (the VM's folder was copied), that one
/// is used, with a note. Whether a disk file may be read at all (inside the
/// VMX's directory, or one the user allowed) is decided when it is opened.
pub fn load(path: &Path) -> Result<VmSpec> {
    let bytes = read_descriptor(path)?;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        Error::unsupported(format!(
            "VMX is not UTF-8 (invalid byte at offset {}); re-save it with .encoding = \"UTF-8\"",
            e.valid_up_to()
        ))
    })?;
    let mut spec = parse(text, path).map_err(|e| e.context_msg(&path.display().to_string()))?;
    let dir = path.parent().unwrap_or(Path::new(""));
    let mut notes = Vec::new();
    for d in &mut spec.disks {
        let DiskLocation::File { path: p } = &mut d.location else {
            continue;
        };
        let Some(name) = p.to_str().map(str::to_owned) else {
            *p = dir.join(&*p);
            continue;
        };
        let foreign = drive_path(&name);
        if !foreign && !p.is_absolute() {
            *p = dir.join(&*p);
            continue;
        }
        let missing =
            foreign || matches!(p.symlink_metadata(), Err(e) if e.kind() == std::io::ErrorKind::NotFound);
        let beside = name
            .rsplit(['/', '\\'])
            .next()
            .filter(|b| !b.is_empty() && *b != "..")
            .map(|b| dir.join(b));
        match beside {
            Some(b) if missing && b.symlink_metadata().is_ok() => {
                notes.push(format!(
                    "disk file '{name}' is not on this machine; using {} beside the VMX",
                    b.display()
                ));
                *p = b;
            }
            _ if foreign => {
                return Err(Error::io(
                    format!("{}: disk file '{name}'", path.display()),
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "a Windows path, and no file of that name is beside the VMX",
                    ),
                ))
            }
            _ => {}
        }
    }
    spec.notes.extend(notes);
    Ok(spec)
}

/// True for `C:\...` and `C:/...`: a Windows drive path.
fn drive_path(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() >= 3 && b[0].is_ascii_alphabetic() && b[1] == b':' && matches!(b[2], b'\\' | b'/')
}

/// A disk's `fileName` as a path: relative (to the VMX's directory; `\` and
/// `/` both separate), absolute, or a Windows drive path kept as written for
/// [`load`]. URLs and NUL bytes are refused.
fn disk_path(name: &str) -> Result<PathBuf> {
    if name.contains('\0') {
        return Err(Error::Denied(format!(
            "disk file name '{}' holds a NUL byte",
            clip(name)
        )));
    }
    if drive_path(name) {
        return Ok(PathBuf::from(name));
    }
    if name.contains("://") || has_scheme(name) {
        return Err(Error::Denied(format!(
            "disk file name '{}' is a URL; only local files are read",
            clip(name)
        )));
    }
    let mut out = PathBuf::from(if name.starts_with(['/', '\\']) { "/" } else { "" });
    out.extend(
        name.split(['/', '\\'])
            .filter(|part| !part.is_empty() && *part != "."),
    );
    if out.file_name().is_none() {
        return Err(Error::corrupt(
            format!("disk file name '{}' names no file", clip(name)),
            0,
        ));
    }
    Ok(out)
}

/// Parses VMX text. Disk paths are kept as written (relative ones to be
/// joined to the VMX's directory by [`load`]); only URLs are refused here.
pub fn parse(text: &str, source_path: &Path) -> Result<VmSpec> {
    let vmx = Vmx::parse(text)?;
    let mut notes = Vec::new();
    let disks = disks(&vmx, &mut notes)?;
    let nics = nics(&vmx)?;

    let vcpus = match vmx.get("numvcpus") {
        Some(v) => {
            let n = vmx.number("numvcpus", v)?;
            if n == 0 {
                return Err(Error::corrupt("numvcpus is 0", vmx.offset("numvcpus")));
            }
            check_limit("vCPUs", n, u64::from(MAX_VCPUS))?;
            n as u32
        }
        None => 1,
    };
    let memory_mib = match vmx.get("memsize") {
        Some(v) => {
            let n = vmx.number("memsize", v)?;
            if n == 0 {
                return Err(Error::corrupt("memsize is 0", vmx.offset("memsize")));
            }
            check_limit("memory MiB", n, MAX_MEMORY_MIB)?;
            n
        }
        None => {
            notes.push(format!("no memsize; assuming {DEFAULT_MEMORY_MIB} MiB"));
            DEFAULT_MEMORY_MIB
        }
    };
    let firmware = match vmx.get("firmware").map(str::to_ascii_lowercase).as_deref() {
        Some("efi") => Some(Firmware::Uefi),
        Some("bios") => Some(Firmware::Bios),
        Some(other) => {
            notes.push(format!("unknown firmware '{other}'; inspection decides"));
            None
        }
        None => None,
    };
    if vmx.bool("floppy0.present")? == Some(true) {
        notes.push("floppy drive floppy0 is not converted".into());
    }
    Ok(VmSpec {
        name: vmx
            .get("displayname")
            .filter(|s| !s.trim().is_empty())
            .map_or_else(|| file_stem_name(source_path), str::to_string),
        source_kind: SourceKind::Vmx,
        source_path: source_path.to_path_buf(),
        vcpus,
        memory_mib,
        firmware,
        os_type: vmx.get("guestos").map(str::to_string),
        os_description: None,
        disks,
        nics,
        notes,
    })
}

/// A device slot named in the VMX: bus, controller, unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Slot {
    bus: usize,
    ctrl: u32,
    unit: u32,
}

impl Slot {
    /// Parses "scsi0:1" (case already folded).
    fn parse(name: &str) -> Option<Slot> {
        let (bus, prefix) = BUSES.iter().enumerate().find(|(_, b)| name.starts_with(**b))?;
        let (ctrl, unit) = name[prefix.len()..].split_once(':')?;
        let num = |s: &str| -> Option<u32> {
            if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok().filter(|n| *n <= MAX_DEVICE_INDEX)
        };
        Some(Slot {
            bus,
            ctrl: num(ctrl)?,
            unit: num(unit)?,
        })
    }

    fn name(self) -> String {
        format!("{}{}:{}", BUSES[self.bus], self.ctrl, self.unit)
    }

    fn controller(self) -> String {
        format!("{}{}", BUSES[self.bus], self.ctrl)
    }
}

/// The disks, boot disk first (see the module doc for the order).
fn disks(vmx: &Vmx, notes: &mut Vec<String>) -> Result<Vec<VmDisk>> {
    let mut slots: Vec<Slot> = vmx
        .entries
        .keys()
        .filter_map(|k| k.strip_suffix(".present"))
        .filter_map(Slot::parse)
        .collect();
    slots.sort();
    slots.dedup();
    let boot_order: Vec<Slot> = vmx
        .get("bios.hddorder")
        .map(|o| {
            o.split(',')
                .filter_map(|s| Slot::parse(&s.trim().to_ascii_lowercase()))
                .collect()
        })
        .unwrap_or_default();
    slots.sort_by_key(|s| (boot_order.iter().position(|b| b == s).unwrap_or(usize::MAX), *s));

    let mut disks = Vec::new();
    for slot in slots {
        let name = slot.name();
        if vmx.bool(&format!("{name}.present"))? != Some(true) {
            continue;
        }
        let dev = vmx
            .get(&format!("{name}.devicetype"))
            .unwrap_or("")
            .to_ascii_lowercase();
        let file = vmx.get(&format!("{name}.filename"));
        match dev.as_str() {
            "" | "disk" | "scsi-harddisk" | "ata-harddisk" => {}
            "cdrom-image" | "atapi-cdrom" | "cdrom-raw" => {
                let image = match file {
                    Some(f) if dev == "cdrom-image" && !f.is_empty() => format!(" with image '{f}'"),
                    _ => String::new(),
                };
                notes.push(format!("CD/DVD drive {name}{image} is not converted"));
                continue;
            }
            other => {
                notes.push(format!("device {name} of type '{other}' is not converted"));
                continue;
            }
        }
        let Some(file) = file.filter(|f| !f.is_empty()) else {
            notes.push(format!("disk {name} names no file; skipped"));
            continue;
        };
        let path = disk_path(file).map_err(|e| e.context_msg(&format!("{name}.fileName")))?;
        let format_hint = path
            .extension()
            .and_then(|e| e.to_str())
            .filter(|e| e.eq_ignore_ascii_case("vmdk"))
            .map(|_| "vmdk".to_string());
        let attachment = match vmx.get(&format!("{}.virtualdev", slot.controller())) {
            Some(dev) if !dev.is_empty() => format!("{name} ({dev})"),
            _ => name,
        };
        check_limit("disks", disks.len() as u64 + 1, MAX_DISKS as u64)?;
        disks.push(VmDisk {
            location: DiskLocation::File { path },
            capacity: None,
            format_hint,
            attachment: Some(attachment),
        });
    }
    Ok(disks)
}

/// The present NICs, by ethernet index.
fn nics(vmx: &Vmx) -> Result<Vec<VmNic>> {
    let mut idx: Vec<u32> = vmx
        .entries
        .keys()
        .filter_map(|k| k.strip_prefix("ethernet")?.strip_suffix(".present"))
        .filter(|n| !n.is_empty() && n.len() <= 3 && n.bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|n| n.parse().ok())
        .collect();
    idx.sort_unstable();
    let mut nics = Vec::new();
    for i in idx {
        let k = |f: &str| format!("ethernet{i}.{f}");
        if vmx.bool(&k("present"))? != Some(true) {
            continue;
        }
        check_limit("NICs", nics.len() as u64 + 1, MAX_NICS as u64)?;
        let mac_key = match vmx.get(&k("addresstype")).map(str::to_ascii_lowercase).as_deref() {
            Some("static") => k("address"),
            Some("generated") | Some("vpx") => k("generatedaddress"),
            _ if vmx.get(&k("address")).is_some() => k("address"),
            _ => k("generatedaddress"),
        };
        let mac = match vmx.get(&mac_key) {
            Some(m) => Some(normalize_mac(m).ok_or_else(|| {
                Error::corrupt(format!("{mac_key} '{m}' is not a MAC"), vmx.offset(&mac_key))
            })?),
            None => None,
        };
        let network = vmx
            .get(&k("networkname"))
            .or_else(|| vmx.get(&k("connectiontype")))
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        nics.push(VmNic {
            network,
            mac,
            model: vmx.get(&k("virtualdev")).map(str::to_string),
        });
    }
    Ok(nics)
}

/// The entries of a VMX: lower-cased key -> (unescaped value, byte offset of its line).
struct Vmx {
    entries: BTreeMap<String, (String, u64)>,
}

impl Vmx {
    fn parse(text: &str) -> Result<Vmx> {
        let mut entries = BTreeMap::new();
        let mut at = 0u64;
        for raw in text.split_inclusive('\n') {
            let line_off = at;
            at += raw.len() as u64;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(Error::corrupt(
                    format!("VMX line '{}' is not key = value", clip(line)),
                    line_off,
                ));
            };
            let key = key.trim().to_ascii_lowercase();
            if key.is_empty() {
                return Err(Error::corrupt("VMX line with an empty key", line_off));
            }
            let value = value.trim();
            let value = match value.strip_prefix('"') {
                Some(rest) => {
                    let Some(end) = rest.find('"') else {
                        return Err(Error::corrupt(
                            format!("VMX value of '{key}' has no closing quote"),
                            line_off,
                        ));
                    };
                    let tail = rest[end + 1..].trim();
                    if !tail.is_empty() && !tail.starts_with('#') {
                        return Err(Error::corrupt(
                            format!("VMX text after the value of '{key}'"),
                            line_off,
                        ));
                    }
                    unescape(&rest[..end])
                }
                None => unescape(value.split('#').next().unwrap_or("").trim()),
            };
            entries.insert(key, (value, line_off));
            check_limit("VMX entries", entries.len() as u64, MAX_VMX_ENTRIES as u64)?;
        }
        Ok(Vmx { entries })
    }

    /// The value of `key` (lower case).
    fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(|(v, _)| v.as_str())
    }

    fn offset(&self, key: &str) -> u64 {
        self.entries.get(key).map_or(0, |(_, o)| *o)
    }

    /// A boolean entry: TRUE/FALSE (any case), also yes/no, 1/0.
    fn bool(&self, key: &str) -> Result<Option<bool>> {
        let Some(v) = self.get(key) else { return Ok(None) };
        match v.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Ok(Some(true)),
            "false" | "no" | "0" => Ok(Some(false)),
            _ => Err(Error::corrupt(
                format!("{key} '{}' is not TRUE or FALSE", clip(v)),
                self.offset(key),
            )),
        }
    }

    /// A decimal number entry.
    fn number(&self, key: &str, v: &str) -> Result<u64> {
        let t = v.trim();
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::corrupt(
                format!("{key} '{}' is not a number", clip(v)),
                self.offset(key),
            ));
        }
        t.parse()
            .map_err(|_| Error::corrupt(format!("{key} '{}' is out of range", clip(v)), self.offset(key)))
    }
}

/// Decodes VMware's `|XX` escapes; a `|` not followed by two hex digits stays.
fn unescape(s: &str) -> String {
    if !s.contains('|') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'|')
            .then(|| b.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(v) => {
                out.push(v);
                i += 3;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first 80 characters of `s`, for messages.
fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(text: &str) -> &'static str {
        match parse(text, Path::new("t.vmx")) {
            Ok(_) => "ok",
            Err(e) => e.kind_name(),
        }
    }

    #[test]
    fn escapes_and_comments() {
        let s = parse(
            "# c\ndisplayName = \"a |22b|22 |7C c|zz\" # trailing\nMEMSIZE=64\nscsi0:0.present = \"TRUE\"\nscsi0:0.fileName = \"my|20disk.vmdk\"\n",
            Path::new("t.vmx"),
        )
        .unwrap();
        assert_eq!(s.name, "a \"b\" | c|zz");
        assert_eq!(s.memory_mib, 64);
        assert_eq!(
            s.disks[0].location,
            DiskLocation::File {
                path: "my disk.vmdk".into()
            }
        );
    }

    #[test]
    fn hostile_values() {
        assert_eq!(kind("memsize = \"-1\""), "corrupt");
        assert_eq!(kind("memsize = \"lots\""), "corrupt");
        assert_eq!(kind("memsize = \"99999999999999999999999\""), "corrupt");
        assert_eq!(kind("memsize = \"16777217\""), "limit-exceeded");
        assert_eq!(kind("numvcpus = \"0\""), "corrupt");
        assert_eq!(kind("numvcpus = \"4097\""), "limit-exceeded");
        assert_eq!(kind("displayName = \"unterminated"), "corrupt");
        assert_eq!(kind("no equals sign"), "corrupt");
        assert_eq!(kind("scsi0:0.present = \"maybe\""), "corrupt");
        assert_eq!(
            kind("ethernet0.present = \"TRUE\"\nethernet0.address = \"nope\""),
            "corrupt"
        );
    }

    #[test]
    fn file_names_kept_for_load_and_urls_refused() {
        let path = |f: &str| {
            let t = format!("scsi0:0.present = \"TRUE\"\nscsi0:0.fileName = \"{f}\"\n");
            match parse(&t, Path::new("t.vmx")).map(|s| s.disks[0].location.clone()) {
                Ok(DiskLocation::File { path }) => Ok(path),
                Ok(other) => panic!("{other:?}"),
                Err(e) => Err(e.kind_name()),
            }
        };
        // Where these may be read from is decided when the disk is opened.
        assert_eq!(path("../x.vmdk"), Ok(PathBuf::from("../x.vmdk")));
        assert_eq!(path("a/../../x.vmdk"), Ok(PathBuf::from("a/../../x.vmdk")));
        assert_eq!(path("sub\\x.vmdk"), Ok(PathBuf::from("sub/x.vmdk")));
        assert_eq!(path("./x.vmdk"), Ok(PathBuf::from("x.vmdk")));
        assert_eq!(
            path("/vmfs/volumes/ds/x.vmdk"),
            Ok(PathBuf::from("/vmfs/volumes/ds/x.vmdk"))
        );
        assert_eq!(path("C:\\VMs\\x.vmdk"), Ok(PathBuf::from("C:\\VMs\\x.vmdk")));
        assert_eq!(path("|2E|2E/x.vmdk"), Ok(PathBuf::from("../x.vmdk")));
        for f in ["http://h/x.vmdk", "file:x.vmdk", "vmfs:x", "x|00.vmdk"] {
            assert_eq!(path(f), Err("denied"), "{f}");
        }
        for f in ["..", "/", "a/.."] {
            assert_eq!(path(f), Err("corrupt"), "{f}");
        }
    }

    #[test]
    fn caps() {
        let many: String = (0..=MAX_DISKS)
            .map(|i| {
                format!(
                    "sata{}:{}.present = \"TRUE\"\nsata{}:{}.fileName = \"d{i}.vmdk\"\n",
                    i / 30,
                    i % 30,
                    i / 30,
                    i % 30
                )
            })
            .collect();
        assert_eq!(kind(&many), "limit-exceeded");
        let nics: String = (0..=MAX_NICS)
            .map(|i| format!("ethernet{i}.present = \"TRUE\"\n"))
            .collect();
        assert_eq!(kind(&nics), "limit-exceeded");
        assert_eq!(Slot::parse("scsi999:0"), None);
        assert_eq!(Slot::parse("scsi0:00001"), None);
    }

    #[test]
    fn hdd_order_moves_boot_disk_first() {
        let t = "scsi0:0.present = \"TRUE\"\nscsi0:0.fileName = \"a.vmdk\"\nnvme0:0.present = \"TRUE\"\nnvme0:0.fileName = \"b.vmdk\"\nbios.hddOrder = \"nvme0:0\"\n";
        let s = parse(t, Path::new("t.vmx")).unwrap();
        assert_eq!(s.disks[0].attachment.as_deref(), Some("nvme0:0"));
    }
}
