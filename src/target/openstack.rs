//! The OpenStack target (`--target openstack`): `NAME.json`, the glance image
//! properties of the boot disk, one entry per disk, and the `openstack`
//! commands that upload them.

use super::{gib_ceil, is_windows, shell_quote, validate, write_file, BlockDriver, OutputVm, TargetOptions};
use crate::vm::Firmware;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use v2x_formats::{Error, Result};

const DB_TOML: &str = include_str!("../../drivers-db/openstack/os-distro.toml");

/// The mapping tables of `drivers-db/openstack/os-distro.toml`.
#[derive(Debug, Deserialize)]
struct Db {
    /// Inspection's distro id → OpenStack `os_distro`.
    os_distro: BTreeMap<String, String>,
    /// qemu-img format name → glance `disk_format`, where they differ.
    disk_format: BTreeMap<String, String>,
}

/// What `NAME.json` holds.
#[derive(Debug, Serialize)]
pub struct ImageSet {
    /// The VM's name.
    pub name: String,
    /// "v2x VERSION".
    pub generated_by: String,
    /// vCPUs and memory, for choosing a flavor.
    pub flavor_hint: FlavorHint,
    /// Glance properties of the boot image (the first disk).
    pub boot_image_properties: BTreeMap<String, String>,
    /// The disks, boot disk first.
    pub disks: Vec<ImageDisk>,
    /// Shell commands (python-openstackclient) that upload the disks.
    pub commands: Vec<String>,
    /// Things the user should know.
    pub notes: Vec<String>,
}

/// The size the VM had.
#[derive(Debug, Serialize)]
pub struct FlavorHint {
    /// vCPUs.
    pub vcpus: u32,
    /// Memory, MiB.
    pub ram_mib: u64,
}

/// One disk as a glance image.
#[derive(Debug, Serialize)]
pub struct ImageDisk {
    /// Image name (the disk file's name).
    pub name: String,
    /// Absolute path of the image file.
    pub path: String,
    /// Glance `disk_format`.
    pub disk_format: String,
    /// Glance `container_format`: always `bare`.
    pub container_format: String,
    /// Glance `min_disk`, GiB rounded up.
    pub min_disk: u64,
    /// Whether the VM boots from it.
    pub boot: bool,
}

/// Writes `NAME.json` into `outdir` and returns its path.
pub fn write(vm: &OutputVm, opts: &TargetOptions, outdir: &Path) -> Result<Vec<PathBuf>> {
    validate(vm, opts)?;
    let set = image_set(vm, opts)?;
    let mut text = serde_json::to_string_pretty(&set)
        .map_err(|e| Error::invalid(format!("serialising the OpenStack description: {e}")))?;
    text.push('\n');
    Ok(vec![write_file(
        outdir,
        super::TargetKind::Openstack,
        &vm.name,
        &text,
    )?])
}

/// The OpenStack `os_distro` for inspection's distro id, if the vocabulary has one.
pub fn os_distro(distro: &str) -> Result<Option<String>> {
    Ok(db()?.os_distro.get(&distro.to_ascii_lowercase()).cloned())
}

fn db() -> Result<&'static Db> {
    static DB: OnceLock<std::result::Result<Db, String>> = OnceLock::new();
    DB.get_or_init(|| toml::from_str(DB_TOML).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| Error::invalid(format!("drivers-db/openstack/os-distro.toml: {e}")))
}

/// The description of `vm` as glance images.
pub fn image_set(vm: &OutputVm, opts: &TargetOptions) -> Result<ImageSet> {
    let db = db()?;
    let mut notes = Vec::new();
    let mut props = BTreeMap::new();
    let mut set = |k: &str, v: &str| props.insert(k.to_string(), v.to_string());
    match opts.block_driver {
        BlockDriver::VirtioBlk => set("hw_disk_bus", "virtio"),
        BlockDriver::VirtioScsi => {
            set("hw_disk_bus", "scsi");
            set("hw_scsi_model", "virtio-scsi")
        }
    };
    set("hw_vif_model", "virtio");
    set("hw_machine_type", "q35");
    set("hw_qemu_guest_agent", "yes");
    set("hw_rng_model", "virtio");
    set(
        "hw_firmware_type",
        match vm.firmware {
            Firmware::Uefi => "uefi",
            Firmware::Bios => "bios",
        },
    );
    let windows = is_windows(vm);
    let linux = vm.guest.as_ref().is_some_and(|g| g.os_type == "linux");
    if windows {
        set("os_type", "windows");
        set("os_distro", "windows");
    } else if linux {
        set("os_type", "linux");
    }
    if let Some(g) = &vm.guest {
        if let Some(d) = g.distro.as_deref().filter(|_| !windows) {
            match db.os_distro.get(&d.to_ascii_lowercase()) {
                Some(o) => {
                    set("os_distro", o);
                }
                None => notes.push(format!("distribution {d:?} has no OpenStack os_distro: none set")),
            }
        }
        if let Some(v) = &g.version {
            set("os_version", v);
        }
    }
    if !vm.nics.is_empty() {
        notes.push(
            "networks are chosen when the server is created (openstack server create --network)".into(),
        );
    }

    let mut disks = Vec::new();
    let mut commands = Vec::new();
    for (i, d) in vm.disks.iter().enumerate() {
        let name = d
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| format!("{}-disk{i}", vm.name));
        let disk_format = db
            .disk_format
            .get(&d.format)
            .cloned()
            .unwrap_or_else(|| d.format.clone());
        let min_disk = gib_ceil(d.virtual_size);
        let path = d.path.to_string_lossy().into_owned();
        let mut cmd = format!(
            "openstack image create --disk-format {} --container-format bare --min-disk {min_disk} --file {}",
            shell_quote(&disk_format),
            shell_quote(&path)
        );
        if i == 0 {
            for (k, v) in &props {
                cmd.push_str(&format!(" --property {}", shell_quote(&format!("{k}={v}"))));
            }
        }
        cmd.push(' ');
        cmd.push_str(&shell_quote(&name));
        commands.push(cmd);
        if i > 0 {
            commands.push(format!(
                "openstack volume create --image {} --size {min_disk} {}",
                shell_quote(&name),
                shell_quote(&name)
            ));
        }
        disks.push(ImageDisk {
            name,
            path,
            disk_format,
            container_format: "bare".into(),
            min_disk,
            boot: i == 0,
        });
    }
    Ok(ImageSet {
        name: vm.name.clone(),
        generated_by: format!("v2x {}", env!("CARGO_PKG_VERSION")),
        flavor_hint: FlavorHint {
            vcpus: vm.vcpus,
            ram_mib: vm.memory_mib,
        },
        boot_image_properties: props,
        disks,
        commands,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distro_vocabulary() {
        assert_eq!(os_distro("debian").unwrap().as_deref(), Some("debian"));
        assert_eq!(os_distro("opensuse-leap").unwrap().as_deref(), Some("opensuse"));
        assert_eq!(os_distro("RHEL").unwrap().as_deref(), Some("rhel"));
        assert_eq!(os_distro("no-such-os").unwrap(), None);
        assert_eq!(
            db().unwrap().disk_format.get("vpc").map(String::as_str),
            Some("vhd")
        );
    }
}
