//! Target platforms: after the disks are converted, write what the platform
//! needs to start the VM (libvirt domain XML, a qemu command line, a KubeVirt
//! VirtualMachine, OpenStack image properties).
//!
//! Every writer takes the same [`OutputVm`]; each lives in its own file.

pub mod kubevirt;
pub mod libvirt;
pub mod openstack;
pub mod qemu;
mod xml;

use crate::vm::{Firmware, VmNic};
use serde::Serialize;
use std::path::{Path, PathBuf};
use v2x_formats::{Error, Result};

/// Where the converted VM goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// Disks plus a libvirt domain XML.
    Local,
    /// Disks plus an executable qemu-system-x86_64 script.
    Qemu,
    /// Disks plus a KubeVirt VirtualMachine YAML.
    Kubevirt,
    /// Disks plus a JSON of glance image properties.
    Openstack,
    /// Convert and discard.
    Null,
}

impl TargetKind {
    /// The target's name as `--target` spells it.
    pub fn name(self) -> &'static str {
        match self {
            TargetKind::Local => "local",
            TargetKind::Qemu => "qemu",
            TargetKind::Kubevirt => "kubevirt",
            TargetKind::Openstack => "openstack",
            TargetKind::Null => "null",
        }
    }

    /// The file this target writes beside the disks of VM `name` (None for `null`).
    pub fn description_file(self, name: &str) -> Option<String> {
        let ext = match self {
            TargetKind::Local => "xml",
            TargetKind::Qemu => "sh",
            TargetKind::Kubevirt => "yaml",
            TargetKind::Openstack => "json",
            TargetKind::Null => return None,
        };
        Some(format!("{name}.{ext}"))
    }
}

/// How the guest's disks are attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BlockDriver {
    /// virtio-blk (vda, vdb, ...).
    VirtioBlk,
    /// virtio-scsi (sda, sdb, ...).
    VirtioScsi,
}

/// What inspection found about the guest OS.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GuestInfo {
    /// "linux", "windows", or "unknown".
    pub os_type: String,
    /// Distribution id ("debian", "rhel", ...), when known.
    pub distro: Option<String>,
    /// Version ("12", "9.3", ...), when known.
    pub version: Option<String>,
    /// Product name ("Debian GNU/Linux 12 (bookworm)"), when known.
    pub product_name: Option<String>,
}

/// One converted disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutDisk {
    /// Absolute path of the written image.
    pub path: PathBuf,
    /// Its format ("qcow2", "raw", ...).
    pub format: String,
    /// Guest-visible size in bytes.
    pub virtual_size: u64,
}

/// The converted VM, as the target writers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutputVm {
    /// Name of the VM (also the stem of every file written).
    pub name: String,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// Firmware the converted guest boots with (resolved: source description,
    /// else inspection, else BIOS).
    pub firmware: Firmware,
    /// Disks, boot disk first.
    pub disks: Vec<OutDisk>,
    /// NICs with the source's network names and MACs.
    pub nics: Vec<VmNic>,
    /// What inspection found, if it ran.
    pub guest: Option<GuestInfo>,
    /// The source's OS identifier (VMX guestOS, OVF osType), if any.
    pub source_os_type: Option<String>,
}

/// Options every target understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetOptions {
    /// How disks are attached.
    pub block_driver: BlockDriver,
    /// `--network IN:OUT`: source network IN becomes target network OUT. An
    /// entry with an empty IN is the default for unmapped networks.
    pub networks: Vec<(String, String)>,
    /// `--bridge IN:OUT`: source network IN becomes host bridge OUT (same
    /// empty-IN default rule). A network mapping wins over a bridge mapping.
    pub bridges: Vec<(String, String)>,
}

impl Default for TargetOptions {
    fn default() -> Self {
        TargetOptions {
            block_driver: BlockDriver::VirtioBlk,
            networks: Vec::new(),
            bridges: Vec::new(),
        }
    }
}

/// Writes the target's description of `vm` into `outdir` (the disks are
/// already there) and returns the files written.
pub fn write(kind: TargetKind, vm: &OutputVm, opts: &TargetOptions, outdir: &Path) -> Result<Vec<PathBuf>> {
    match kind {
        TargetKind::Local => libvirt::write(vm, opts, outdir),
        TargetKind::Qemu => qemu::write(vm, opts, outdir),
        TargetKind::Kubevirt => kubevirt::write(vm, opts, outdir),
        TargetKind::Openstack => openstack::write(vm, opts, outdir),
        TargetKind::Null => Ok(Vec::new()),
    }
}

/// Longest VM name accepted, bytes: it must still fit a file name with a
/// suffix (`NAME_VARS.fd`, `NAME-sdaa`) under the usual 255-byte limit.
pub const MAX_NAME_BYTES: usize = 200;

/// The libvirt network a NIC joins when nothing maps its source network.
pub const DEFAULT_NETWORK: &str = "default";

/// Checks that `name` is usable as a file stem and a domain name: not empty, at
/// most [`MAX_NAME_BYTES`], no `/`, no control characters, not starting with
/// `.` (hidden, `..`) or `-` (read as an option by virsh and friends).
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::invalid(format!("VM name {name:?}: {why}")));
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_NAME_BYTES {
        return bad(&format!("longer than {MAX_NAME_BYTES} bytes"));
    }
    if name.starts_with('.') || name.starts_with('-') {
        return bad("starts with '.' or '-'");
    }
    if name.contains('/') {
        return bad("contains '/'");
    }
    if name.chars().any(char::is_control) {
        return bad("contains a control character");
    }
    Ok(())
}

/// Checks everything a writer relies on: the name ([`validate_name`]), the
/// options ([`validate_options`]), and vCPUs and memory within the VM model's caps.
pub fn validate(vm: &OutputVm, opts: &TargetOptions) -> Result<()> {
    validate_name(&vm.name)?;
    validate_options(opts)?;
    if vm.vcpus == 0 || vm.vcpus > crate::vm::MAX_VCPUS {
        return Err(Error::invalid(format!(
            "{} vCPUs (1 to {})",
            vm.vcpus,
            crate::vm::MAX_VCPUS
        )));
    }
    if vm.memory_mib == 0 || vm.memory_mib > crate::vm::MAX_MEMORY_MIB {
        return Err(Error::invalid(format!(
            "{} MiB of memory (1 to {})",
            vm.memory_mib,
            crate::vm::MAX_MEMORY_MIB
        )));
    }
    Ok(())
}

/// Checks the target names in `opts` (the OUT of `--network`/`--bridge`): not
/// empty, no control characters.
pub fn validate_options(opts: &TargetOptions) -> Result<()> {
    for (flag, list) in [("--network", &opts.networks), ("--bridge", &opts.bridges)] {
        for (from, to) in list {
            if to.is_empty() || to.chars().any(char::is_control) {
                return Err(Error::invalid(format!(
                    "{flag} {from}:{to}: the target name must be non-empty, without control characters"
                )));
            }
        }
    }
    Ok(())
}

/// Where a NIC is plugged on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetTarget {
    /// A named network (libvirt network, KubeVirt Multus network).
    Network(String),
    /// A host bridge.
    Bridge(String),
    /// Nothing maps it: the platform's default (libvirt `default`, qemu user
    /// networking, KubeVirt's pod network).
    Default,
}

/// Maps a NIC's source network: an exact `--network` entry, else an exact
/// `--bridge` entry, else the default `--network` (empty IN), else the default
/// `--bridge`, else [`NetTarget::Default`].
pub fn map_network(nic: &VmNic, opts: &TargetOptions) -> NetTarget {
    let find = |list: &[(String, String)], key: &str| {
        list.iter()
            .find(|(from, _)| from == key)
            .map(|(_, to)| to.clone())
    };
    if let Some(src) = nic.network.as_deref().filter(|n| !n.is_empty()) {
        if let Some(to) = find(&opts.networks, src) {
            return NetTarget::Network(to);
        }
        if let Some(to) = find(&opts.bridges, src) {
            return NetTarget::Bridge(to);
        }
    }
    if let Some(to) = find(&opts.networks, "") {
        return NetTarget::Network(to);
    }
    if let Some(to) = find(&opts.bridges, "") {
        return NetTarget::Bridge(to);
    }
    NetTarget::Default
}

/// The guest-visible device name of disk `index` (0-based): `vda`.. for
/// virtio-blk, `sda`.. for virtio-scsi; after `z` come `aa`, `ab`, ... as
/// Linux names them.
pub fn disk_dev_name(driver: BlockDriver, index: usize) -> String {
    let prefix = match driver {
        BlockDriver::VirtioBlk => "vd",
        BlockDriver::VirtioScsi => "sd",
    };
    format!("{prefix}{}", disk_letters(index))
}

/// Letters of disk `index` in the Linux scheme: a..z, aa..zz, aaa...
pub fn disk_letters(index: usize) -> String {
    let mut letters = Vec::new();
    let mut n = index + 1;
    while n > 0 {
        let rem = (n - 1) % 26;
        letters.push(char::from(b'a' + rem as u8));
        n = (n - 1) / 26;
    }
    letters.iter().rev().collect()
}

/// Whether the guest is Windows: inspection says so, else the source's OS
/// identifier (VMX `windows9-64`, OVF `windows2019srv_64Guest`) starts with "win".
pub fn is_windows(vm: &OutputVm) -> bool {
    match &vm.guest {
        Some(g) if g.os_type != "unknown" && !g.os_type.is_empty() => g.os_type == "windows",
        _ => vm
            .source_os_type
            .as_deref()
            .is_some_and(|t| t.to_ascii_lowercase().starts_with("win")),
    }
}

/// The NIC's MAC in lowercase colon form, or None when it has none or it is
/// not a valid unicast MAC (the target then generates one).
pub fn nic_mac(nic: &VmNic) -> Option<String> {
    let mac = crate::vm::normalize_mac(nic.mac.as_deref()?)?;
    let first = u8::from_str_radix(&mac[..2], 16).ok()?;
    (first & 1 == 0).then_some(mac)
}

/// Quotes `s` for a POSIX shell: single quotes, each `'` written as `'\''`.
/// Plain words made only of safe characters are left as they are.
pub fn shell_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `s` for a `#` comment line: control characters (a newline would end the
/// comment) become `?`.
pub fn comment_safe(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// Size in whole GiB, rounded up, at least 1.
pub fn gib_ceil(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 30).max(1)
}

/// Writes `contents` to the description file of target `kind` for VM
/// `vm_name` in `outdir` (replacing it) and returns the path.
fn write_file(outdir: &Path, kind: TargetKind, vm_name: &str, contents: &str) -> Result<PathBuf> {
    let file_name = kind
        .description_file(vm_name)
        .ok_or_else(|| Error::invalid(format!("the {} target writes no file", kind.name())))?;
    let path = outdir.join(file_name);
    std::fs::write(&path, contents).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic(network: Option<&str>) -> VmNic {
        VmNic {
            network: network.map(str::to_string),
            mac: None,
            model: None,
        }
    }

    fn opts(networks: &[(&str, &str)], bridges: &[(&str, &str)]) -> TargetOptions {
        let own = |l: &[(&str, &str)]| l.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        TargetOptions {
            block_driver: BlockDriver::VirtioBlk,
            networks: own(networks),
            bridges: own(bridges),
        }
    }

    #[test]
    fn network_precedence() {
        let o = opts(
            &[("VM Network", "lan"), ("", "fallback")],
            &[("VM Network", "br0"), ("dmz", "br1")],
        );
        // An exact --network beats an exact --bridge.
        assert_eq!(
            map_network(&nic(Some("VM Network")), &o),
            NetTarget::Network("lan".into())
        );
        // An exact --bridge beats a default --network.
        assert_eq!(
            map_network(&nic(Some("dmz")), &o),
            NetTarget::Bridge("br1".into())
        );
        // Unmapped and unnamed networks take the default --network.
        assert_eq!(
            map_network(&nic(Some("other")), &o),
            NetTarget::Network("fallback".into())
        );
        assert_eq!(map_network(&nic(None), &o), NetTarget::Network("fallback".into()));
    }

    #[test]
    fn network_defaults() {
        let bridge_default = opts(&[("a", "x")], &[("", "br9")]);
        assert_eq!(
            map_network(&nic(Some("b")), &bridge_default),
            NetTarget::Bridge("br9".into())
        );
        let both = opts(&[("", "net9")], &[("", "br9")]);
        assert_eq!(
            map_network(&nic(Some("b")), &both),
            NetTarget::Network("net9".into())
        );
        assert_eq!(map_network(&nic(Some("b")), &opts(&[], &[])), NetTarget::Default);
        // A NIC with an empty network name is not matched by the empty-IN default entry as exact.
        assert_eq!(
            map_network(&nic(Some("")), &opts(&[], &[("", "br")])),
            NetTarget::Bridge("br".into())
        );
        // Matching is exact: case and spaces count.
        assert_eq!(
            map_network(&nic(Some("vm network")), &opts(&[("VM Network", "x")], &[])),
            NetTarget::Default
        );
    }

    #[test]
    fn names() {
        for ok in [
            "web01",
            "My VM (prod)",
            "a.b",
            "x-",
            "ünï<&>'\"",
            &"n".repeat(MAX_NAME_BYTES),
        ] {
            assert!(validate_name(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            ".hidden",
            "..",
            "-rf",
            "a/b",
            "tab\there",
            "nl\n",
            "nul\0",
            &"n".repeat(MAX_NAME_BYTES + 1),
        ] {
            let e = validate_name(bad).unwrap_err();
            assert_eq!(e.kind_name(), "invalid", "{bad:?}");
        }
        assert!(validate_options(&opts(&[("a", "")], &[])).is_err());
        assert!(validate_options(&opts(&[], &[("a", "b\nc")])).is_err());
        assert!(validate_options(&opts(&[("", "net")], &[("x", "br 0")])).is_ok());
    }

    #[test]
    fn device_names() {
        assert_eq!(disk_dev_name(BlockDriver::VirtioBlk, 0), "vda");
        assert_eq!(disk_dev_name(BlockDriver::VirtioBlk, 2), "vdc");
        assert_eq!(disk_dev_name(BlockDriver::VirtioScsi, 1), "sdb");
        assert_eq!(disk_dev_name(BlockDriver::VirtioScsi, 25), "sdz");
        assert_eq!(disk_dev_name(BlockDriver::VirtioScsi, 26), "sdaa");
        assert_eq!(disk_dev_name(BlockDriver::VirtioBlk, 63), "vdbl");
        assert_eq!(disk_letters(26 + 26 * 26), "aaa");
    }

    #[test]
    fn macs() {
        let mut n = nic(None);
        n.mac = Some("00:50:56:AB:CD:EF".into());
        assert_eq!(nic_mac(&n).as_deref(), Some("00:50:56:ab:cd:ef"));
        n.mac = Some("01:00:5e:00:00:01".into()); // multicast
        assert_eq!(nic_mac(&n), None);
        n.mac = Some("junk".into());
        assert_eq!(nic_mac(&n), None);
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/plain/path.qcow2"), "/plain/path.qcow2");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("$HOME`x`\"\\"), "'$HOME`x`\"\\'");
        assert_eq!(gib_ceil(0), 1);
        assert_eq!(gib_ceil((1 << 30) + 1), 2);
    }

    #[test]
    fn windows_detection() {
        let mut vm = OutputVm {
            name: "w".into(),
            vcpus: 1,
            memory_mib: 1024,
            firmware: Firmware::Bios,
            disks: Vec::new(),
            nics: Vec::new(),
            guest: None,
            source_os_type: Some("windows2019srv_64Guest".into()),
        };
        assert!(is_windows(&vm));
        vm.guest = Some(GuestInfo {
            os_type: "linux".into(),
            ..GuestInfo::default()
        });
        assert!(!is_windows(&vm));
        vm.guest = Some(GuestInfo {
            os_type: "unknown".into(),
            ..GuestInfo::default()
        });
        assert!(is_windows(&vm));
    }
}
