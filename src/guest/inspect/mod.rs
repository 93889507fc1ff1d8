//! `v2x inspect`: what is on the disks, and which operating systems they hold.
//!
//! The stages are: disks → volumes (partition tables, LVM) → filesystems
//! (probe + open, read-only) → candidate roots (a filesystem that looks like
//! `/` of Linux or the system volume of Windows) → for each root, mount the
//! rest of its tree from fstab and gather the OS facts → rank the roots.
//! Nothing is mounted on the host and nothing is written.

pub mod os;
pub mod report;
pub mod spec;

use crate::fs::guest::GuestRoot;
use crate::fs::{FileType, Filesystem, FsKind};
use crate::volume::{self, Content, Volume, VolumeKind, VolumeSet};
use serde::Serialize;
use std::sync::Arc;
use v2x_formats::block::BlockSource;
use v2x_formats::Result;

/// Version of the JSON schema printed by `v2x inspect --json`.
pub const SCHEMA_VERSION: u32 = 1;

/// GPT type of an EFI System Partition.
pub const ESP_TYPE: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
/// GPT type of a BIOS boot partition (GRUB's core.img on GPT disks).
pub const BIOS_BOOT_TYPE: &str = "21686148-6449-6e6f-744e-656564454649";

/// One input disk.
pub struct Disk {
    /// Path as given by the user.
    pub path: String,
    /// Format name ("vmdk", "qcow2", ...).
    pub format: String,
    /// Its guest-visible bytes.
    pub source: Arc<dyn BlockSource>,
}

/// Disks, volumes and open filesystems: the guest's storage, shared by
/// inspection and (later) conversion.
pub struct Storage {
    /// The disks, in order (disk 0 is `sda`).
    pub disks: Vec<Disk>,
    /// What the volume layer found.
    pub volumes: VolumeSet,
    /// Per volume (same index): the filesystem, if one opened.
    pub filesystems: Vec<Option<Arc<dyn Filesystem>>>,
    /// Per volume: why a filesystem that was recognised could not be opened.
    pub fs_errors: Vec<Option<String>>,
}

impl Storage {
    /// Scans the disks and opens every filesystem found.
    pub fn open(disks: Vec<Disk>) -> Result<Self> {
        let sources: Vec<Arc<dyn BlockSource>> = disks.iter().map(|d| d.source.clone()).collect();
        let volumes = volume::scan(&sources)?;
        let mut filesystems = Vec::with_capacity(volumes.volumes.len());
        let mut fs_errors = Vec::with_capacity(volumes.volumes.len());
        for v in &volumes.volumes {
            if !matches!(v.content, Content::Unknown) {
                filesystems.push(None);
                fs_errors.push(None);
                continue;
            }
            match crate::fs::open(v.source.clone()) {
                Ok(fs) => {
                    filesystems.push(fs);
                    fs_errors.push(None);
                }
                Err(e) => {
                    filesystems.push(None);
                    fs_errors.push(Some(e.to_string()));
                }
            }
        }
        Ok(Self {
            disks,
            volumes,
            filesystems,
            fs_errors,
        })
    }

    /// Candidates for device-name resolution, one per volume.
    pub fn candidates(&self) -> Vec<spec::Candidate<'_>> {
        self.volumes
            .volumes
            .iter()
            .zip(&self.filesystems)
            .map(|(volume, fs)| spec::Candidate {
                volume,
                fs: fs.as_ref(),
            })
            .collect()
    }
}

/// What `v2x inspect --json` prints. Field names are stable; see the man page.
#[derive(Debug, Serialize)]
pub struct Inspection {
    /// [`SCHEMA_VERSION`].
    pub schema: u32,
    /// The input disks.
    pub disks: Vec<DiskReport>,
    /// Every volume found, with its filesystem.
    pub volumes: Vec<VolumeReport>,
    /// Operating system roots, best first.
    pub roots: Vec<RootReport>,
    /// Problems that did not stop inspection.
    pub warnings: Vec<String>,
}

/// One disk in the report.
#[derive(Debug, Serialize)]
pub struct DiskReport {
    /// Linux name the guest sees on SCSI/SATA ("sda").
    pub name: String,
    /// Path of the image.
    pub path: String,
    /// Image format.
    pub format: String,
    /// Guest-visible size in bytes.
    pub virtual_size: u64,
    /// "mbr", "gpt" or "none".
    pub partition_table: String,
}

/// One volume in the report.
#[derive(Debug, Serialize)]
pub struct VolumeReport {
    /// "sda1", "vg/lv", ...
    pub name: String,
    /// Index of its disk.
    pub disk: usize,
    /// How it was found.
    pub kind: VolumeKind,
    /// Size in bytes.
    pub size: u64,
    /// What signatures say it holds.
    pub content: Content,
    /// The filesystem on it, if one opened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<FsReport>,
    /// Why a recognised filesystem could not be opened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A filesystem in the report.
#[derive(Debug, Serialize)]
pub struct FsReport {
    /// blkid's TYPE ("ext4", "xfs", "btrfs", "ntfs", "vfat").
    #[serde(rename = "type")]
    pub fs_type: String,
    /// Label, if set.
    pub label: Option<String>,
    /// UUID as blkid prints it.
    pub uuid: Option<String>,
    /// btrfs subvolumes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subvolumes: Vec<crate::fs::Subvolume>,
    /// Notes (an unclean journal replayed in memory, a dirty flag).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// A filesystem mounted into a root's tree.
#[derive(Debug, Clone, Serialize)]
pub struct MountReport {
    /// Guest mount point.
    pub mountpoint: String,
    /// The device spec the guest uses (from fstab; for `/` the spec fstab gives, if any).
    pub spec: Option<String>,
    /// The volume it resolved to, or null if nothing matched.
    pub volume: Option<String>,
    /// Filesystem type from fstab (or the probed one for `/`).
    pub fstype: String,
    /// btrfs subvolume mounted, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subvolume: Option<String>,
}

/// One operating system found.
#[derive(Debug, Clone, Serialize)]
pub struct RootReport {
    /// 1 is the root `convert --root first` picks.
    pub rank: u32,
    /// Volume holding `/` (or `C:`).
    pub volume: String,
    /// btrfs subvolume holding `/`, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subvolume: Option<String>,
    /// "linux" or "windows".
    pub os_type: String,
    /// Distribution id ("debian", "rhel", "ubuntu") or "windows".
    pub distro: Option<String>,
    /// Version as the OS states it ("12", "9.3", "10.0").
    pub version: Option<String>,
    /// Product name ("Debian GNU/Linux 12 (bookworm)", "Windows Server 2019 Standard").
    pub product_name: Option<String>,
    /// CPU architecture ("x86_64").
    pub arch: Option<String>,
    /// Hostname.
    pub hostname: Option<String>,
    /// "bios" or "uefi".
    pub firmware: String,
    /// Why the firmware was decided so.
    pub firmware_reason: String,
    /// The mount table used to read the guest.
    pub mountpoints: Vec<MountReport>,
    /// Linux details (kernels, initramfs, bootloader, tools, network).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linux: Option<serde_json::Value>,
    /// Windows details (build, edition, hibernation, services).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub windows: Option<serde_json::Value>,
    /// Problems reading this root.
    pub warnings: Vec<String>,
}

/// Inspects disks: the full pipeline behind `v2x inspect`.
pub fn inspect(disks: Vec<Disk>) -> Result<Inspection> {
    let storage = Storage::open(disks)?;
    inspect_storage(&storage)
}

/// Inspects already-opened storage.
pub fn inspect_storage(storage: &Storage) -> Result<Inspection> {
    let mut warnings = storage.volumes.warnings.clone();
    let disks = storage
        .disks
        .iter()
        .enumerate()
        .map(|(i, d)| DiskReport {
            name: volume::disk_name("sd", i),
            path: d.path.clone(),
            format: d.format.clone(),
            virtual_size: d.source.size(),
            partition_table: storage
                .volumes
                .tables
                .get(i)
                .cloned()
                .unwrap_or_else(|| "none".into()),
        })
        .collect();
    let volumes = storage
        .volumes
        .volumes
        .iter()
        .zip(&storage.filesystems)
        .zip(&storage.fs_errors)
        .map(|((v, fs), err)| VolumeReport {
            name: v.name.clone(),
            disk: v.disk,
            kind: v.kind.clone(),
            size: v.source.size(),
            content: v.content.clone(),
            filesystem: fs.as_ref().map(|fs| fs_report(fs.as_ref())),
            error: err.clone(),
        })
        .collect();

    let mut roots = Vec::new();
    for (i, fs) in storage.filesystems.iter().enumerate() {
        let Some(fs) = fs else { continue };
        let vol = &storage.volumes.volumes[i];
        for (subvol, tree_fs) in root_candidates(fs) {
            let tree = GuestRoot::new(tree_fs.clone(), vol.name.clone());
            let kind = match os::detect(&tree) {
                Ok(Some(k)) => k,
                Ok(None) => continue,
                Err(e) => {
                    warnings.push(format!("{}: {e}", vol.name));
                    continue;
                }
            };
            match inspect_root(storage, i, subvol.clone(), tree, kind) {
                Ok(r) => roots.push(r),
                Err(e) => warnings.push(format!("inspecting the {kind:?} root on {}: {e}", vol.name)),
            }
        }
    }
    rank(&mut roots);
    Ok(Inspection {
        schema: SCHEMA_VERSION,
        disks,
        volumes,
        roots,
        warnings,
    })
}

/// The guest tree of an inspected root (`root.volume`, `root.subvolume`),
/// with the filesystems its fstab names mounted, as inspection saw it.
pub fn root_tree(storage: &Storage, root: &RootReport) -> Result<GuestRoot> {
    let idx = storage
        .volumes
        .volumes
        .iter()
        .position(|v| v.name == root.volume)
        .ok_or_else(|| v2x_formats::Error::not_found(format!("volume {}", root.volume)))?;
    let fs = storage.filesystems[idx]
        .as_ref()
        .ok_or_else(|| v2x_formats::Error::not_found(format!("a filesystem on {}", root.volume)))?;
    let tree_fs = root_candidates(fs)
        .into_iter()
        .find(|(sub, _)| sub.as_deref() == root.subvolume.as_deref())
        .map(|(_, f)| f)
        .ok_or_else(|| {
            v2x_formats::Error::not_found(format!("subvolume {:?} on {}", root.subvolume, root.volume))
        })?;
    let mut tree = GuestRoot::new(tree_fs, root.volume.clone());
    if root.os_type == os::OsKind::Linux.name() {
        let (mut mounts, mut warnings) = (Vec::new(), Vec::new());
        mount_fstab(storage, &mut tree, &mut mounts, &mut warnings)?;
    }
    Ok(tree)
}

fn fs_report(fs: &dyn Filesystem) -> FsReport {
    FsReport {
        fs_type: fs.kind_name().to_string(),
        label: fs.label(),
        uuid: fs.uuid(),
        subvolumes: fs.subvolumes(),
        notes: fs.notes(),
    }
}

/// The trees of one filesystem that may hold a root: the handle itself and,
/// on btrfs, every other subvolume (snapshots rank lower).
fn root_candidates(fs: &Arc<dyn Filesystem>) -> Vec<(Option<String>, Arc<dyn Filesystem>)> {
    let mut out = vec![(None, fs.clone())];
    if fs.kind() == FsKind::Btrfs {
        let subs = fs.subvolumes();
        if let Some(def) = subs.iter().find(|s| s.is_default) {
            out[0].0 = Some(def.path.clone());
        }
        for s in subs.iter().filter(|s| !s.is_default) {
            if let Ok(sub) = fs.open_subvolume(&s.path) {
                out.push((Some(s.path.clone()), sub));
            }
        }
    }
    out
}

/// Builds a root's tree (mounting what its fstab names) and reads its OS facts.
fn inspect_root(
    storage: &Storage,
    vol_index: usize,
    subvol: Option<String>,
    mut tree: GuestRoot,
    kind: os::OsKind,
) -> Result<RootReport> {
    let vol = &storage.volumes.volumes[vol_index];
    let mut warnings = Vec::new();
    let root_fs = tree.root_fs().clone();
    let mut mountpoints = vec![MountReport {
        mountpoint: "/".into(),
        spec: None,
        volume: Some(vol.name.clone()),
        fstype: root_fs.kind_name().into(),
        subvolume: subvol.clone(),
    }];
    if kind == os::OsKind::Linux {
        mount_fstab(storage, &mut tree, &mut mountpoints, &mut warnings)?;
    }
    let facts = os::gather(kind, &tree)?;
    warnings.extend(facts.warnings.iter().cloned());
    let (firmware, firmware_reason) = firmware(storage, vol, &mountpoints);
    Ok(RootReport {
        rank: 0,
        volume: vol.name.clone(),
        subvolume: subvol,
        os_type: kind.name().into(),
        distro: facts.distro,
        version: facts.version,
        product_name: facts.product_name,
        arch: facts.arch,
        hostname: facts.hostname,
        firmware,
        firmware_reason,
        mountpoints,
        linux: facts.linux,
        windows: facts.windows,
        warnings,
    })
}

/// Filesystem types in fstab that are never on a disk volume.
const VIRTUAL_FS: &[&str] = &[
    "proc",
    "sysfs",
    "tmpfs",
    "devpts",
    "devtmpfs",
    "swap",
    "none",
    "nfs",
    "nfs4",
    "cifs",
    "bind",
    "securityfs",
    "cgroup",
    "cgroup2",
    "debugfs",
    "hugetlbfs",
    "mqueue",
    "efivarfs",
    "fuse",
];

fn mount_fstab(
    storage: &Storage,
    tree: &mut GuestRoot,
    mountpoints: &mut Vec<MountReport>,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let Some(text) = tree.read_text_opt("/etc/fstab", 1 << 20)? else {
        return Ok(());
    };
    let cands = storage.candidates();
    let mut entries: Vec<(String, String, String, Option<String>)> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 {
            continue;
        }
        let (spec, mp, fstype) = (f[0], spec::unescape(f[1]), f[2]);
        let opts = f.get(3).copied().unwrap_or("");
        let subvol = opts
            .split(',')
            .find_map(|o| o.strip_prefix("subvol="))
            .map(|s| s.trim_start_matches('/').to_string());
        if mp == "/" {
            if let Some(m) = mountpoints.first_mut() {
                m.spec = Some(spec.to_string());
            }
            continue;
        }
        if !mp.starts_with('/') || VIRTUAL_FS.contains(&fstype) || opts.split(',').any(|o| o == "bind") {
            continue;
        }
        entries.push((spec.to_string(), mp, fstype.to_string(), subvol));
    }
    // Parents before children: /boot before /boot/efi.
    entries.sort_by_key(|e| e.1.matches('/').count());
    for (spec, mp, fstype, subvol) in entries {
        let idx = spec::resolve(&spec, &cands);
        let report = MountReport {
            mountpoint: mp.clone(),
            spec: Some(spec.clone()),
            volume: idx.map(|i| storage.volumes.volumes[i].name.clone()),
            fstype: fstype.clone(),
            subvolume: subvol.clone(),
        };
        match idx.and_then(|i| storage.filesystems[i].clone()) {
            Some(fs) => {
                let fs = match &subvol {
                    Some(s) if fs.kind() == FsKind::Btrfs => match fs.open_subvolume(s) {
                        Ok(sub) => sub,
                        Err(e) => {
                            warnings.push(format!("fstab {mp}: subvolume {s}: {e}"));
                            continue;
                        }
                    },
                    _ => fs,
                };
                tree.mount(&mp, fs, report.volume.clone().unwrap_or_default())?;
            }
            None => match &report.volume {
                Some(v) => warnings.push(format!("fstab {mp}: volume {v} holds no readable filesystem")),
                None => warnings.push(format!("fstab {mp}: {spec} matches no volume on the given disks")),
            },
        }
        mountpoints.push(report);
    }
    Ok(())
}

/// BIOS or UEFI: an ESP holding `/EFI`, mounted by the guest or on a GPT
/// disk, means UEFI; a BIOS boot partition or an MBR disk means BIOS.
fn firmware(storage: &Storage, root: &Volume, mounts: &[MountReport]) -> (String, String) {
    let disk = root.disk;
    let esp_with_efi = storage
        .volumes
        .volumes
        .iter()
        .zip(&storage.filesystems)
        .find(|(v, fs)| {
            let is_esp = matches!(&v.kind, VolumeKind::Partition { type_id, .. }
                if type_id.eq_ignore_ascii_case(ESP_TYPE) || type_id == "0xef");
            is_esp
                && fs.as_ref().is_some_and(|fs| {
                    fs.read_dir("/").is_ok_and(|es| {
                        es.iter()
                            .any(|e| e.file_type == FileType::Dir && e.name.eq_ignore_ascii_case("EFI"))
                    })
                })
        });
    let bios_boot = storage.volumes.volumes.iter().any(|v| {
        v.disk == disk
            && matches!(&v.kind, VolumeKind::Partition { type_id, .. } if type_id.eq_ignore_ascii_case(BIOS_BOOT_TYPE))
    });
    let efi_mounted = mounts
        .iter()
        .any(|m| m.mountpoint == "/boot/efi" || m.mountpoint == "/efi");
    if let Some((v, _)) = esp_with_efi {
        if bios_boot {
            return (
                "bios".into(),
                format!("a BIOS boot partition exists beside the ESP {}", v.name),
            );
        }
        return (
            "uefi".into(),
            format!("EFI System Partition {} holds /EFI", v.name),
        );
    }
    if efi_mounted {
        return ("uefi".into(), "the guest mounts /boot/efi".into());
    }
    if bios_boot {
        return ("bios".into(), "BIOS boot partition on the root disk".into());
    }
    let table = storage
        .volumes
        .tables
        .get(disk)
        .map(String::as_str)
        .unwrap_or("none");
    (
        "bios".into(),
        format!("no EFI System Partition; {table} partition table"),
    )
}

/// Ranks roots: real systems before snapshots, bootable before not, disk order.
fn rank(roots: &mut [RootReport]) {
    let key = |r: &RootReport| {
        let snapshot = r.subvolume.as_deref().is_some_and(|s| s.contains("snapshot"));
        (snapshot, r.product_name.is_none(), r.volume.clone())
    };
    roots.sort_by_key(key);
    for (i, r) in roots.iter_mut().enumerate() {
        r.rank = i as u32 + 1;
    }
}
