//! The UEFI fallback loader. Firmware boot entries live in NVRAM, which
//! stays behind with the old hypervisor, so on KVM with fresh NVRAM a UEFI
//! guest boots only from the removable-media path `\EFI\BOOT\BOOTX64.EFI`.
//! When that file is missing, the distribution's loader (shim when present,
//! else GRUB or systemd-boot) is copied there on the ESP. Which files to
//! copy is data: `drivers-db/linux/uefi-fallback.toml`.

use super::plan::{Edit, Step};
use crate::fs::guest::GuestRoot;
use crate::fs::{FileType, FsKind};
use serde::Deserialize;
use v2x_formats::Result;

const RULES_TOML: &str = include_str!("../../drivers-db/linux/uefi-fallback.toml");

/// Largest loader file copied.
pub const MAX_LOADER: u64 = 64 << 20;
/// Most vendor directories looked at under `\EFI`.
const MAX_VENDORS: usize = 64;

/// One candidate loader in a vendor directory.
#[derive(Debug, Clone, Deserialize)]
pub struct Candidate {
    /// File name in `\EFI\<vendor>\`.
    pub file: String,
    /// Files copied beside it when they exist.
    pub companions: Vec<String>,
}

/// The fallback rules of one architecture.
#[derive(Debug, Clone, Deserialize)]
pub struct ArchRules {
    /// Architecture as inspection reports it ("x86_64").
    pub arch: String,
    /// File name of the fallback loader ("BOOTX64.EFI").
    pub fallback: String,
    /// Loaders to copy, most preferred first.
    pub candidates: Vec<Candidate>,
}

#[derive(Deserialize)]
struct Rules {
    arch: Vec<ArchRules>,
}

/// The rules for `arch`, from drivers-db.
pub fn rules(arch: &str) -> Option<ArchRules> {
    let r: Rules = toml::from_str(RULES_TOML).expect("drivers-db/linux/uefi-fallback.toml is valid (tested)");
    r.arch.into_iter().find(|a| a.arch == arch)
}

/// The guest path of `name` in `dir`, matched ignoring ASCII case (FAT);
/// `None` when `dir` or `name` does not exist.
fn ci(tree: &GuestRoot, dir: &str, name: &str) -> Result<Option<String>> {
    match tree.find_case_insensitive(dir, name) {
        Ok(found) => Ok(found.map(|n| format!("{}/{n}", dir.trim_end_matches('/')))),
        Err(v2x_formats::Error::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The guest path where the ESP is mounted (a FAT mount holding `EFI`).
fn esp_mount(tree: &GuestRoot) -> Result<Option<String>> {
    for m in tree.mounts() {
        if m.fs.kind() == FsKind::Fat && ci(tree, &m.at, "EFI")?.is_some() {
            return Ok(Some(m.at.clone()));
        }
    }
    Ok(None)
}

/// Adds `\EFI\BOOT\BOOT<ARCH>.EFI` when a UEFI guest's ESP lacks it.
/// `distro` ("debian") names the vendor directory tried first.
pub fn fallback_step(tree: &GuestRoot, arch: &str, distro: Option<&str>) -> Result<Step> {
    let mut step = Step {
        id: "uefi-fallback".into(),
        summary: "UEFI fallback loader \\EFI\\BOOT\\BOOT<arch>.EFI, for firmware with empty NVRAM".into(),
        edits: vec![],
        notes: vec![],
    };
    let Some(rules) = rules(arch) else {
        step.notes
            .push(format!("no UEFI fallback rules for architecture {arch}"));
        return Ok(step);
    };
    let Some(esp) = esp_mount(tree)? else {
        step.notes
            .push("the guest does not mount an EFI System Partition; \\EFI\\BOOT was not checked".into());
        return Ok(step);
    };
    let efi = ci(tree, &esp, "EFI")?.unwrap_or_else(|| format!("{esp}/EFI"));
    let boot_dir = ci(tree, &efi, "BOOT")?;
    if let Some(dir) = &boot_dir {
        if let Some(f) = ci(tree, dir, &rules.fallback)? {
            step.notes.push(format!("{f} exists; nothing to add"));
            return Ok(step);
        }
    }
    let mut vendors: Vec<String> = tree
        .read_dir(&efi)?
        .into_iter()
        .filter(|e| e.file_type == FileType::Dir && !e.name.eq_ignore_ascii_case("BOOT"))
        .map(|e| e.name)
        .take(MAX_VENDORS)
        .collect();
    vendors.sort();
    // The distribution's own directory first.
    if let Some(d) = distro {
        vendors.sort_by_key(|v| !v.eq_ignore_ascii_case(d));
    }
    for cand in &rules.candidates {
        for v in &vendors {
            let dir = format!("{efi}/{v}");
            let Some(loader) = ci(tree, &dir, &cand.file)? else {
                continue;
            };
            let target_dir = boot_dir.clone().unwrap_or_else(|| format!("{efi}/BOOT"));
            if boot_dir.is_none() {
                step.edits.push(Edit::Mkdir {
                    path: target_dir.clone(),
                });
            }
            let mut copy = |from: &str, name: &str| -> Result<()> {
                step.edits.push(Edit::WriteFile {
                    path: format!("{target_dir}/{name}"),
                    old: None,
                    new: tree.read_file_max(from, MAX_LOADER)?,
                    mode: 0o644,
                });
                Ok(())
            };
            copy(&loader, &rules.fallback)?;
            for c in &cand.companions {
                if let Some(p) = ci(tree, &dir, c)? {
                    copy(&p, c)?;
                }
            }
            step.notes
                .push(format!("{loader} copied to {target_dir}/{}", rules.fallback));
            return Ok(step);
        }
    }
    step.notes.push(format!(
        "no loader to use as {}: none of {} in {efi}/*",
        rules.fallback,
        rules
            .candidates
            .iter()
            .map(|c| c.file.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(step)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::memfs::MemFs;
    use std::sync::Arc;

    fn tree(files: &[(&str, &[u8])]) -> GuestRoot {
        let mut root = MemFs::new();
        root.dir("/boot/efi");
        let mut esp = MemFs::new().with_kind(FsKind::Fat);
        for (p, d) in files {
            esp.file(p, d);
        }
        let mut t = GuestRoot::new(Arc::new(root), "sda2");
        t.mount("/boot/efi", Arc::new(esp), "sda1").unwrap();
        t
    }

    #[test]
    fn copies_grub_and_its_config() {
        let t = tree(&[
            ("/EFI/debian/grubx64.efi", b"GRUB"),
            ("/EFI/debian/grub.cfg", b"cfg"),
            ("/EFI/other/grubx64.efi", b"OTHER"),
        ]);
        let s = fallback_step(&t, "x86_64", Some("debian")).unwrap();
        let paths: Vec<&str> = s.edits.iter().map(Edit::path).collect();
        assert_eq!(
            paths,
            [
                "/boot/efi/EFI/BOOT",
                "/boot/efi/EFI/BOOT/BOOTX64.EFI",
                "/boot/efi/EFI/BOOT/grub.cfg"
            ]
        );
        let Edit::WriteFile { new, .. } = &s.edits[1] else {
            panic!()
        };
        assert_eq!(new, b"GRUB");
    }

    #[test]
    fn prefers_shim_and_keeps_an_existing_fallback() {
        let t = tree(&[
            ("/EFI/fedora/shimx64.efi", b"SHIM"),
            ("/EFI/fedora/grubx64.efi", b"GRUB"),
            ("/EFI/fedora/mmx64.efi", b"MM"),
        ]);
        let s = fallback_step(&t, "x86_64", Some("fedora")).unwrap();
        let Edit::WriteFile { new, .. } = &s.edits[1] else {
            panic!()
        };
        assert_eq!(new, b"SHIM");
        assert_eq!(s.edits.len(), 4);
        let t = tree(&[("/EFI/debian/grubx64.efi", b"G"), ("/EFI/Boot/bootx64.efi", b"B")]);
        let s = fallback_step(&t, "x86_64", None).unwrap();
        assert!(s.edits.is_empty(), "{:?}", s.edits);
    }

    #[test]
    fn rules_cover_x86_64_and_aarch64() {
        assert_eq!(rules("x86_64").unwrap().fallback, "BOOTX64.EFI");
        assert_eq!(rules("aarch64").unwrap().fallback, "BOOTAA64.EFI");
    }
}
