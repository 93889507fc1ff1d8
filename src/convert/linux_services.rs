//! Linux plan steps that change how the guest starts: the old hypervisor's
//! tools are disabled offline (their packages go at first boot), the virtio
//! modules are recorded for the guest's next initramfs rebuild, and network
//! configuration pinned to the old NIC's MAC address is unpinned.

use super::firstboot::{self, Script};
use super::plan::{Edit, Step};
use super::virtio_initramfs::VirtioRules;
use crate::fs::guest::GuestRoot;
use crate::fs::FileType;
use crate::guest::linux::tools::tool_specs;
use crate::guest::linux::LinuxInfo;
use std::collections::BTreeSet;
use v2x_formats::{Error, Result};

/// Largest config file this module rewrites.
const MAX_CONFIG: u64 = 1 << 20;
/// Most entries read from one directory of links.
const MAX_LINKS: usize = 4096;

/// systemd directories whose `*.wants` / `*.requires` links enable units.
const SYSTEMD_DIRS: &[&str] = &["/etc/systemd/system"];
/// SysV runlevel directories.
const RC_DIRS: &[&str] = &[
    "/etc/rc0.d",
    "/etc/rc1.d",
    "/etc/rc2.d",
    "/etc/rc3.d",
    "/etc/rc4.d",
    "/etc/rc5.d",
    "/etc/rc6.d",
    "/etc/rcS.d",
    "/etc/rc.d/rc0.d",
    "/etc/rc.d/rc1.d",
    "/etc/rc.d/rc2.d",
    "/etc/rc.d/rc3.d",
    "/etc/rc.d/rc4.d",
    "/etc/rc.d/rc5.d",
    "/etc/rc.d/rc6.d",
];

fn list(tree: &GuestRoot, dir: &str) -> Result<Vec<crate::fs::DirEntry>> {
    match tree.read_dir(dir) {
        Ok(mut es) => {
            es.truncate(MAX_LINKS);
            Ok(es)
        }
        Err(Error::NotFound(_)) => Ok(vec![]),
        Err(e) => Err(e),
    }
}

/// The links that enable `services` (unit names or init-script names):
/// systemd wants/requires links and aliases, SysV start/kill links.
pub fn service_links(tree: &GuestRoot, services: &BTreeSet<String>) -> Result<Vec<String>> {
    // "open-vm-tools" also names its unit "open-vm-tools.service".
    let mut units: BTreeSet<String> = BTreeSet::new();
    let mut scripts: BTreeSet<String> = BTreeSet::new();
    for s in services {
        if s.contains('.') {
            units.insert(s.clone());
            if let Some(stem) = s.strip_suffix(".service") {
                scripts.insert(stem.to_string());
            }
        } else {
            units.insert(format!("{s}.service"));
            scripts.insert(s.clone());
        }
    }
    let mut out = Vec::new();
    for base in SYSTEMD_DIRS {
        for e in list(tree, base)? {
            let path = format!("{base}/{}", e.name);
            if e.file_type == FileType::Dir && (e.name.ends_with(".wants") || e.name.ends_with(".requires")) {
                for l in list(tree, &path)? {
                    if units.contains(&l.name) && l.file_type == FileType::Symlink {
                        out.push(format!("{path}/{}", l.name));
                    }
                }
            } else if e.file_type == FileType::Symlink && units.contains(&e.name) {
                // An alias (vmtoolsd.service -> open-vm-tools.service), unless it
                // is a mask (-> /dev/null), which already keeps the unit off.
                if tree.read_link(&path)? != "/dev/null" {
                    out.push(path);
                }
            }
        }
    }
    for dir in RC_DIRS {
        for e in list(tree, dir)? {
            let b = e.name.as_bytes();
            let is_rc = b.len() > 3
                && (b[0] == b'S' || b[0] == b'K')
                && b[1].is_ascii_digit()
                && b[2].is_ascii_digit();
            if is_rc && scripts.contains(&e.name[3..]) {
                out.push(format!("{dir}/{}", e.name));
            }
        }
    }
    Ok(out)
}

/// Disables the old hypervisor's guest tools and queues their removal.
/// Returns the step and the first-boot scripts it needs.
pub fn hypervisor_tools_step(tree: &GuestRoot, info: &LinuxInfo) -> Result<(Step, Vec<Script>)> {
    let specs = tool_specs();
    let mut edits = Vec::new();
    let mut notes = Vec::new();
    let mut packages = Vec::new();
    for tool in &info.hypervisor_tools {
        let services: BTreeSet<String> = specs
            .iter()
            .filter(|s| s.id == tool.id)
            .flat_map(|s| s.services.iter().cloned())
            .collect();
        let links = service_links(tree, &services)?;
        notes.push(format!(
            "{} ({}): {} start link(s) removed{}",
            tool.name,
            tool.hypervisor,
            links.len(),
            if tool.packages.is_empty() {
                String::new()
            } else {
                format!("; packages removed at first boot: {}", tool.packages.join(" "))
            }
        ));
        edits.extend(links.into_iter().map(|path| Edit::Remove { path }));
        packages.extend(tool.packages.iter().cloned());
    }
    let mut scripts = Vec::new();
    if !packages.is_empty() {
        match info
            .packages
            .manager
            .as_deref()
            .and_then(firstboot::package_manager)
        {
            Some(pm) => scripts.push(firstboot::remove_packages_script(&pm, &packages)),
            None => notes.push(format!(
                "no known package manager: remove {} by hand",
                packages.join(" ")
            )),
        }
    }
    Ok((
        Step {
            id: "hypervisor-tools".into(),
            summary: "the old hypervisor's guest tools are disabled (removed at first boot)".into(),
            edits,
            notes,
        },
        scripts,
    ))
}

/// Queues the QEMU guest agent's installation when it is not installed.
pub fn guest_agent_script(info: &LinuxInfo) -> Option<Script> {
    let pm = info
        .packages
        .manager
        .as_deref()
        .and_then(firstboot::package_manager)?;
    let installed = info.packages.installed.iter().any(|p| p.name == pm.guest_agent);
    (!installed).then(|| firstboot::guest_agent_script(&pm))
}

/// Records the virtio modules in the guest's initramfs generator config, so
/// its next initramfs rebuild keeps them (initramfs-tools or dracut).
pub fn initramfs_config_step(tree: &GuestRoot, rules: &VirtioRules) -> Result<Step> {
    let mut edits = Vec::new();
    let modules = &rules.initramfs.modules;
    const TOOLS_MODULES: &str = "/etc/initramfs-tools/modules";
    if tree.exists("/etc/initramfs-tools")? {
        let old = tree.read_text_opt(TOOLS_MODULES, MAX_CONFIG)?;
        let text = old.clone().unwrap_or_default();
        let have: BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|w| !w.starts_with('#'))
            .collect();
        let missing: Vec<&String> = modules.iter().filter(|m| !have.contains(m.as_str())).collect();
        if !missing.is_empty() {
            let mut new = text.clone();
            if !new.is_empty() && !new.ends_with('\n') {
                new.push('\n');
            }
            new.push_str("# Added by v2x: virtio drivers for KVM\n");
            for m in missing {
                new.push_str(m);
                new.push('\n');
            }
            edits.push(Edit::WriteFile {
                path: TOOLS_MODULES.into(),
                old: old.map(String::into_bytes),
                new: new.into_bytes(),
                mode: 0o644,
            });
        }
    }
    let dracut = tree.exists("/etc/dracut.conf.d")? || tree.exists("/usr/lib/dracut")?;
    const DRACUT_CONF: &str = "/etc/dracut.conf.d/v2x-virtio.conf";
    if dracut && tree.exists("/etc/dracut.conf.d")? {
        let new = format!(
            "# Added by v2x: virtio drivers for KVM\nadd_drivers+=\" {} \"\n",
            modules.join(" ")
        );
        let old = tree.read_file_max(DRACUT_CONF, MAX_CONFIG).ok();
        if old.as_deref() != Some(new.as_bytes()) {
            edits.push(Edit::WriteFile {
                path: DRACUT_CONF.into(),
                old,
                new: new.into_bytes(),
                mode: 0o644,
            });
        }
    }
    Ok(Step {
        id: "initramfs-config".into(),
        summary: "virtio drivers recorded for the guest's next initramfs rebuild".into(),
        edits,
        notes: vec![],
    })
}

/// Replaces MAC matching in one config text. `name` is what the interface
/// is matched by instead. Returns the new text when something changed.
pub fn unpin_mac(kind: &str, text: &str, name: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        let trimmed = body.trim_start();
        let indent = &body[..body.len() - trimmed.len()];
        let key = trimmed.split(['=', ':']).next().unwrap_or("").trim();
        let replacement = match kind {
            "networkd" if key.eq_ignore_ascii_case("MACAddress") || key == "PermanentMACAddress" => {
                Some(format!("{indent}Name={name}"))
            }
            "ifcfg" | "suse-ifcfg" if key == "HWADDR" => {
                Some(format!("#{trimmed} (removed by v2x: MAC of the old NIC)"))
            }
            "netplan" if key == "macaddress" => Some(format!("{indent}name: \"{name}\"")),
            // A keyfile without a MAC or interface name applies to any Ethernet NIC.
            "networkmanager" if key == "mac-address" || key == "interface-name" => {
                Some(format!("#{trimmed} (removed by v2x: names the old NIC)"))
            }
            _ => None,
        };
        match replacement {
            Some(r) => {
                changed = true;
                out.push_str(&r);
                if line.ends_with('\n') {
                    out.push('\n');
                }
            }
            None => out.push_str(line),
        }
    }
    changed.then_some(out)
}

/// The udev rule that gives the virtio NIC the old NIC's name.
pub const NIC_NAME_RULES: &str = "/etc/udev/rules.d/70-v2x-net-name.rules";

/// The names of physical NICs that the guest's network configuration
/// depends on (`ens192` for `iface ens192.10`, `DEVICE=ens192`, or a
/// networkd `Name=ens192`), other than the kernel's classic `ethN`, which a
/// virtio NIC gets too. Globs, bridges, bonds and the like are not NICs.
fn nic_names(info: &LinuxInfo) -> BTreeSet<String> {
    info.network
        .iter()
        .filter(|n| n.kind != "udev")
        .flat_map(|n| n.interfaces.iter())
        .filter_map(|i| {
            let base = i.split(['.', ':']).next().unwrap_or("");
            is_predictable_nic_name(base).then(|| base.to_string())
        })
        .collect()
}

/// True for a systemd/biosdevname style NIC name: `en` + kind letter + an
/// index (`ens192`, `enp11s0`, `eno1`, `enx...`), `emN` or `pNpM`.
fn is_predictable_nic_name(name: &str) -> bool {
    let alnum = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric());
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if name.len() > 15 {
        return false; // IFNAMSIZ
    }
    if let Some(rest) = name.strip_prefix("en") {
        let mut c = rest.chars();
        return matches!(c.next(), Some('s' | 'p' | 'o' | 'x' | 'b' | 'c' | 'v' | 'P')) && alnum(c.as_str());
    }
    if let Some(n) = name.strip_prefix("em") {
        return digits(n);
    }
    if let Some(rest) = name.strip_prefix('p') {
        if let Some((a, b)) = rest.split_once('p') {
            return digits(a) && digits(b.split('_').next().unwrap_or(""));
        }
    }
    false
}

/// A udev rule naming the virtio NIC `name` (rules outrank the kernel's and
/// systemd's own naming, and work with udev before systemd too). With more
/// than one virtio NIC only the first gets the name.
fn nic_name_rule(name: &str) -> String {
    format!(
        "# Added by v2x: this guest's network configuration names its NIC {name}, the\n\
         # name it had on the old hypervisor, so the virtio NIC gets that name.\n\
         SUBSYSTEM==\"net\", ACTION==\"add\", DRIVERS==\"virtio_net\", NAME=\"{name}\"\n"
    )
}

/// Unpins network configuration from the old NIC's MAC address, and keeps
/// configuration written for the old NIC's name working (see
/// [`NIC_NAME_RULES`]).
///
/// With one pinned configuration the match becomes the new NIC's name
/// pattern (`en*`, and `eth*` for guests with classic names), keeping the
/// rest of the configuration. udev's `70-persistent-net.rules` is removed.
/// With several pinned configurations the pins stay (which one is which is
/// unknowable offline): the target must keep the source MACs.
pub fn network_step(tree: &GuestRoot, info: &LinuxInfo) -> Result<Step> {
    let mut edits = Vec::new();
    let mut notes = Vec::new();
    let pinned: Vec<_> = info
        .network
        .iter()
        .filter(|n| n.pins_mac() && n.kind != "udev")
        .collect();
    if pinned.len() == 1 {
        let n = pinned[0];
        let name = if n.kind == "netplan" { "en*" } else { "en* eth*" };
        let old = tree.read_file_max(&n.path, MAX_CONFIG)?;
        if let Some(new) = unpin_mac(&n.kind, &String::from_utf8_lossy(&old), name) {
            notes.push(format!(
                "{}: matched MAC {} of the old NIC; now any NIC named {name}",
                n.path,
                n.macs.join(", ")
            ));
            edits.push(Edit::WriteFile {
                path: tree.resolve(&n.path, true)?.guest_path,
                old: Some(old),
                new: new.into_bytes(),
                mode: 0o644,
            });
        } else {
            notes.push(format!("{}: pins MAC {} (left as is)", n.path, n.macs.join(", ")));
        }
    } else if pinned.len() > 1 {
        notes.push(format!(
            "{} network configurations pin MAC addresses ({}); they are kept, so give the new NICs the source MACs",
            pinned.len(),
            pinned.iter().map(|n| n.path.as_str()).collect::<Vec<_>>().join(", ")
        ));
    }
    for n in info.network.iter().filter(|n| n.kind == "udev" && n.pins_mac()) {
        edits.push(Edit::Remove { path: n.path.clone() });
        notes.push(format!("{}: NIC names tied to old MACs, removed", n.path));
    }
    let names = nic_names(info);
    match names.len() {
        0 => {}
        1 => {
            let name = names.iter().next().expect("one name");
            if !tree.exists(NIC_NAME_RULES)? {
                notes.push(format!(
                    "configuration names the NIC {name}, its name on the old hypervisor: the virtio NIC is given that name ({NIC_NAME_RULES})"
                ));
                crate::convert::firstboot::mkdirs(tree, "/etc/udev/rules.d", &mut edits)?;
                edits.push(Edit::WriteFile {
                    path: NIC_NAME_RULES.into(),
                    old: None,
                    new: nic_name_rule(name).into_bytes(),
                    mode: 0o644,
                });
            }
        }
        _ => notes.push(format!(
            "configuration names {} NICs ({}); the new NICs keep their own names, so map them by hand",
            names.len(),
            names.iter().cloned().collect::<Vec<_>>().join(", ")
        )),
    }
    Ok(Step {
        id: "network".into(),
        summary: "network configuration no longer tied to the old NIC's MAC address".into(),
        edits,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::memfs::MemFs;
    use std::sync::Arc;

    #[test]
    fn unpins_each_syntax() {
        let nd = "[Match]\nMACAddress=00:50:56:8a:3c:01\n\n[Network]\nDHCP=ipv4\n";
        assert_eq!(
            unpin_mac("networkd", nd, "en* eth*").unwrap(),
            "[Match]\nName=en* eth*\n\n[Network]\nDHCP=ipv4\n"
        );
        let ifcfg = "DEVICE=eth0\nHWADDR=00:50:56:8A:3C:01\nBOOTPROTO=dhcp\n";
        assert_eq!(
            unpin_mac("ifcfg", ifcfg, "x").unwrap(),
            "DEVICE=eth0\n#HWADDR=00:50:56:8A:3C:01 (removed by v2x: MAC of the old NIC)\nBOOTPROTO=dhcp\n"
        );
        let np = "network:\n  ethernets:\n    nic0:\n      match:\n        macaddress: 00:50:56:8a:3c:01\n      dhcp4: true\n";
        assert_eq!(
            unpin_mac("netplan", np, "en*").unwrap(),
            "network:\n  ethernets:\n    nic0:\n      match:\n        name: \"en*\"\n      dhcp4: true\n"
        );
        let nm = "[connection]\nid=Wired\ninterface-name=ens33\n[ethernet]\nmac-address=00:0C:29:01:02:03\n";
        assert_eq!(
            unpin_mac("networkmanager", nm, "x").unwrap(),
            "[connection]\nid=Wired\n#interface-name=ens33 (removed by v2x: names the old NIC)\n[ethernet]\n#mac-address=00:0C:29:01:02:03 (removed by v2x: names the old NIC)\n"
        );
        assert_eq!(unpin_mac("networkd", "[Match]\nName=eth0\n", "x"), None);
    }

    #[test]
    fn nic_names_are_physical_and_predictable() {
        for n in [
            "ens192",
            "enp11s0",
            "eno1",
            "enx0050568a3c01",
            "em1",
            "p2p1",
            "ens33",
        ] {
            assert!(is_predictable_nic_name(n), "{n}");
        }
        for n in [
            "eth0",
            "en*",
            "br0",
            "bond0",
            "lo",
            "en",
            "ens",
            "virbr0",
            "p2",
            "enp1s0\"x",
        ] {
            assert!(!is_predictable_nic_name(n), "{n}");
        }
        let net = |kind: &str, ifs: &[&str]| crate::guest::linux::network::NetConfig {
            path: "/x".into(),
            kind: kind.into(),
            interfaces: ifs.iter().map(|s| s.to_string()).collect(),
            macs: vec![],
        };
        let info = LinuxInfo {
            network: vec![
                net("interfaces", &["ens192", "ens192.10", "br0"]),
                net("udev", &["ens224"]),
            ],
            ..Default::default()
        };
        assert_eq!(nic_names(&info).into_iter().collect::<Vec<_>>(), ["ens192"]);
        assert_eq!(
            nic_name_rule("ens192").lines().last().unwrap(),
            r#"SUBSYSTEM=="net", ACTION=="add", DRIVERS=="virtio_net", NAME="ens192""#
        );
    }

    #[test]
    fn finds_wants_alias_and_rc_links() {
        let mut fs = MemFs::new();
        fs.symlink(
            "/etc/systemd/system/multi-user.target.wants/open-vm-tools.service",
            "/lib/systemd/system/open-vm-tools.service",
        );
        fs.symlink(
            "/etc/systemd/system/vmtoolsd.service",
            "/lib/systemd/system/open-vm-tools.service",
        );
        fs.symlink("/etc/systemd/system/vgauth.service", "/dev/null");
        fs.symlink(
            "/etc/systemd/system/multi-user.target.wants/ssh.service",
            "/lib/systemd/system/ssh.service",
        );
        fs.symlink("/etc/rc2.d/S01open-vm-tools", "../init.d/open-vm-tools");
        fs.symlink("/etc/rc2.d/S01open-vm-toolsx", "../init.d/open-vm-toolsx");
        let tree = GuestRoot::new(Arc::new(fs), "sda1");
        let services: BTreeSet<String> = ["vmtoolsd.service", "open-vm-tools", "vgauth.service"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut links = service_links(&tree, &services).unwrap();
        links.sort();
        assert_eq!(
            links,
            [
                "/etc/rc2.d/S01open-vm-tools",
                "/etc/systemd/system/multi-user.target.wants/open-vm-tools.service",
                "/etc/systemd/system/vmtoolsd.service",
            ]
        );
    }
}
