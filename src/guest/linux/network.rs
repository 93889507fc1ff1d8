//! Network configuration files, the interfaces they name and whether they
//! pin a MAC address (which breaks when the converted guest gets a new NIC).

use super::Ctx;
use serde::Serialize;

/// Most configuration files examined per directory.
pub const MAX_NET_FILES: usize = 1024;

/// Largest configuration file read.
pub const MAX_NET_FILE: u64 = 1 << 20;

/// One network configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetConfig {
    /// Guest path.
    pub path: String,
    /// Which system reads it: "ifcfg", "suse-ifcfg", "netplan", "networkmanager",
    /// "interfaces", "udev", "networkd".
    pub kind: String,
    /// Interface names it configures.
    pub interfaces: Vec<String>,
    /// MAC addresses it names (lowercase).
    pub macs: Vec<String>,
}

impl NetConfig {
    /// True when the file ties its configuration to a MAC address.
    pub fn pins_mac(&self) -> bool {
        !self.macs.is_empty()
    }
}

fn push_unique(v: &mut Vec<String>, s: &str) {
    let s = s.trim().trim_matches('"').trim_matches('\'');
    if !s.is_empty() && !v.iter().any(|x| x == s) {
        v.push(s.to_string());
    }
}

/// Parses a Red Hat or SUSE ifcfg file (`name` is the part after "ifcfg-").
pub fn parse_ifcfg(text: &str, name: &str) -> (Vec<String>, Vec<String>) {
    let kv = super::os::parse_os_release(text);
    let mut ifs = Vec::new();
    let mut macs = Vec::new();
    push_unique(&mut ifs, kv.get("DEVICE").map_or(name, String::as_str));
    for k in ["HWADDR", "MACADDR", "LLADDR"] {
        if let Some(m) = kv.get(k) {
            push_unique(&mut macs, &m.to_lowercase());
        }
    }
    (ifs, macs)
}

/// Parses netplan YAML: interface ids (and `set-name`) under `ethernets:` and
/// the other device sections, and every `macaddress:` value.
pub fn parse_netplan(text: &str) -> (Vec<String>, Vec<String>) {
    const SECTIONS: &[&str] = &["ethernets:", "bonds:", "bridges:", "vlans:", "wifis:"];
    let mut ifs = Vec::new();
    let mut macs = Vec::new();
    let mut section: Option<usize> = None;
    let mut key_indent: Option<usize> = None;
    for line in text.lines() {
        let body = line.split('#').next().unwrap_or("");
        let t = body.trim();
        if t.is_empty() {
            continue;
        }
        let indent = body.len() - body.trim_start().len();
        if let Some(s) = section {
            if indent <= s {
                section = None;
                key_indent = None;
            }
        }
        if SECTIONS.contains(&t) {
            section = Some(indent);
            continue;
        }
        if let Some(v) = t.strip_prefix("macaddress:") {
            push_unique(&mut macs, &v.to_lowercase());
        } else if let Some(v) = t.strip_prefix("set-name:") {
            push_unique(&mut ifs, v);
        } else if section.is_some() && t.ends_with(':') {
            let k = *key_indent.get_or_insert(indent);
            if indent == k {
                push_unique(&mut ifs, t.trim_end_matches(':'));
            }
        }
    }
    (ifs, macs)
}

/// Parses an ini-style file (NetworkManager keyfile, systemd .network/.link):
/// the values of `if_keys` are interfaces and of `mac_keys` MAC addresses.
pub fn parse_ini(text: &str, if_keys: &[&str], mac_keys: &[&str]) -> (Vec<String>, Vec<String>) {
    let mut ifs = Vec::new();
    let mut macs = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        let Some((k, v)) = t.split_once('=') else {
            continue;
        };
        let k = k.trim();
        if if_keys.contains(&k) {
            v.split_whitespace().for_each(|i| push_unique(&mut ifs, i));
        } else if mac_keys.contains(&k) {
            v.split_whitespace()
                .for_each(|m| push_unique(&mut macs, &m.to_lowercase()));
        }
    }
    (ifs, macs)
}

/// Parses Debian's /etc/network/interfaces (`iface`, `auto`, `allow-*`, `hwaddress`).
pub fn parse_interfaces(text: &str) -> (Vec<String>, Vec<String>) {
    let mut ifs = Vec::new();
    let mut macs = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split('#').next().unwrap_or("").split_whitespace().collect();
        match f.as_slice() {
            ["iface", name, ..] => push_unique(&mut ifs, name),
            ["auto" | "allow-hotplug" | "allow-auto", names @ ..] => {
                names.iter().for_each(|n| push_unique(&mut ifs, n))
            }
            ["hwaddress", "ether", mac] | ["hwaddress", mac] => push_unique(&mut macs, &mac.to_lowercase()),
            _ => {}
        }
    }
    ifs.retain(|i| i != "lo");
    (ifs, macs)
}

/// Parses udev persistent-net rules: `NAME="eth0"` and `ATTR{address}=="..."`.
pub fn parse_udev_net(text: &str) -> (Vec<String>, Vec<String>) {
    let mut ifs = Vec::new();
    let mut macs = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
        for part in line.split(',') {
            let p = part.trim();
            if let Some(v) = p.strip_prefix("ATTR{address}==") {
                push_unique(&mut macs, &v.to_lowercase());
            } else if let Some(v) = p.strip_prefix("NAME=") {
                push_unique(&mut ifs, v);
            }
        }
    }
    (ifs, macs)
}

/// Finds the guest's network configuration files.
pub(crate) fn detect(ctx: &mut Ctx) -> Vec<NetConfig> {
    let mut out = Vec::new();
    let mut add = |path: String, kind: &str, (interfaces, macs): (Vec<String>, Vec<String>)| {
        out.push(NetConfig {
            path,
            kind: kind.to_string(),
            interfaces,
            macs,
        })
    };
    for (dir, kind) in [
        ("/etc/sysconfig/network-scripts", "ifcfg"),
        ("/etc/sysconfig/network", "suse-ifcfg"),
    ] {
        for name in ctx.file_names(dir, MAX_NET_FILES) {
            let Some(dev) = name.strip_prefix("ifcfg-") else {
                continue;
            };
            if dev == "lo" {
                continue;
            }
            let path = format!("{dir}/{name}");
            if let Some(t) = ctx.text_max(&path, MAX_NET_FILE) {
                add(path, kind, parse_ifcfg(&t, dev));
            }
        }
    }
    for name in ctx.file_names("/etc/netplan", MAX_NET_FILES) {
        if name.ends_with(".yaml") || name.ends_with(".yml") {
            let path = format!("/etc/netplan/{name}");
            if let Some(t) = ctx.text_max(&path, MAX_NET_FILE) {
                add(path, "netplan", parse_netplan(&t));
            }
        }
    }
    let nm = "/etc/NetworkManager/system-connections";
    for name in ctx.file_names(nm, MAX_NET_FILES) {
        let path = format!("{nm}/{name}");
        if let Some(t) = ctx.text_max(&path, MAX_NET_FILE) {
            add(
                path,
                "networkmanager",
                parse_ini(&t, &["interface-name"], &["mac-address"]),
            );
        }
    }
    let mut interfaces = vec!["/etc/network/interfaces".to_string()];
    for name in ctx.file_names("/etc/network/interfaces.d", MAX_NET_FILES) {
        interfaces.push(format!("/etc/network/interfaces.d/{name}"));
    }
    for path in interfaces {
        if let Some(t) = ctx.text_max(&path, MAX_NET_FILE) {
            add(path, "interfaces", parse_interfaces(&t));
        }
    }
    let udev = "/etc/udev/rules.d/70-persistent-net.rules";
    if let Some(t) = ctx.text_max(udev, MAX_NET_FILE) {
        add(udev.to_string(), "udev", parse_udev_net(&t));
    }
    for dir in ["/etc/systemd/network", "/run/systemd/network"] {
        for name in ctx.file_names(dir, MAX_NET_FILES) {
            if name.ends_with(".network") || name.ends_with(".link") {
                let path = format!("{dir}/{name}");
                if let Some(t) = ctx.text_max(&path, MAX_NET_FILE) {
                    add(
                        path,
                        "networkd",
                        parse_ini(&t, &["Name"], &["MACAddress", "PermanentMACAddress"]),
                    );
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifcfg() {
        let (i, m) = parse_ifcfg(
            "DEVICE=eth0\nHWADDR=\"00:50:56:AA:BB:CC\"\nBOOTPROTO=dhcp\n",
            "eth0",
        );
        assert_eq!(
            (i, m),
            (vec!["eth0".to_string()], vec!["00:50:56:aa:bb:cc".to_string()])
        );
        let (i, m) = parse_ifcfg("BOOTPROTO=dhcp\n", "ens192");
        assert_eq!((i.as_slice(), m.is_empty()), (&["ens192".to_string()][..], true));
    }

    #[test]
    fn netplan() {
        let t = "network:\n  version: 2\n  ethernets:\n    id0:\n      match:\n        macaddress: 00:50:56:AA:BB:CC\n      set-name: eth0\n      dhcp4: true\n    ens4:\n      dhcp4: yes\n  bridges:\n    br0:\n      interfaces: [ens4]\n";
        let (i, m) = parse_netplan(t);
        assert_eq!(i, ["id0", "eth0", "ens4", "br0"]);
        assert_eq!(m, ["00:50:56:aa:bb:cc"]);
    }

    #[test]
    fn ini_interfaces_udev() {
        let (i, m) = parse_ini(
            "[connection]\nid=Wired\ninterface-name=ens33\n[ethernet]\nmac-address=00:0C:29:01:02:03\n",
            &["interface-name"],
            &["mac-address"],
        );
        assert_eq!((i[0].as_str(), m[0].as_str()), ("ens33", "00:0c:29:01:02:03"));
        let (i, m) = parse_interfaces("auto lo eth0\niface lo inet loopback\niface eth0 inet dhcp\n  hwaddress ether 00:11:22:33:44:55\n# iface x\n");
        assert_eq!(
            (i, m),
            (vec!["eth0".to_string()], vec!["00:11:22:33:44:55".to_string()])
        );
        let (i, m) = parse_udev_net("# gen\nSUBSYSTEM==\"net\", ACTION==\"add\", DRIVERS==\"?*\", ATTR{address}==\"00:50:56:aa:bb:cc\", KERNEL==\"eth*\", NAME=\"eth0\"\n");
        assert_eq!((i[0].as_str(), m[0].as_str()), ("eth0", "00:50:56:aa:bb:cc"));
    }
}
