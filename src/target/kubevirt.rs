//! The KubeVirt target (`--target kubevirt`): `NAME.yaml`, a `kubevirt.io/v1`
//! VirtualMachine whose disks are DataVolumes the user uploads with `virtctl`
//! (the header comment gives the commands). The VM starts halted.

use super::{
    comment_safe, disk_letters, gib_ceil, is_windows, map_network, nic_mac, shell_quote, validate,
    write_file, BlockDriver, NetTarget, OutputVm, TargetOptions,
};
use crate::vm::Firmware;
use serde_json::{json, Map, Value};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use v2x_formats::Result;

/// Longest Kubernetes object name written (a DNS-1123 label).
pub const MAX_LABEL: usize = 63;

/// Writes `NAME.yaml` into `outdir` and returns its path.
pub fn write(vm: &OutputVm, opts: &TargetOptions, outdir: &Path) -> Result<Vec<PathBuf>> {
    validate(vm, opts)?;
    let yaml = manifest(vm, opts);
    Ok(vec![write_file(
        outdir,
        super::TargetKind::Kubevirt,
        &vm.name,
        &yaml,
    )?])
}

/// `s` as a DNS-1123 label of at most `max` bytes: lowercase, runs of other
/// characters become one `-`, no `-` at either end; "vm" if nothing is left.
pub fn dns_label(s: &str, max: usize) -> String {
    let mut out = String::new();
    for c in s.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.truncate(max);
    let out = out.trim_end_matches('-');
    if out.is_empty() {
        "vm".to_string()
    } else {
        out.to_string()
    }
}

/// The DataVolume name of disk `index`: the VM's label, `-`, and the disk's
/// `sdX` suffix, the VM part shortened so the whole stays a valid label.
pub fn data_volume_name(vm_name: &str, index: usize) -> String {
    let suffix = format!("sd{}", disk_letters(index));
    let room = MAX_LABEL.saturating_sub(suffix.len() + 1);
    format!("{}-{suffix}", dns_label(vm_name, room))
}

/// The whole YAML file: comments with the upload steps, then the VirtualMachine.
pub fn manifest(vm: &OutputVm, opts: &TargetOptions) -> String {
    let vm_label = dns_label(&vm.name, MAX_LABEL);
    let mut head = String::new();
    let _ = writeln!(
        head,
        "# KubeVirt VirtualMachine {vm_label} (converted from {}) written by v2x {}.",
        comment_safe(&vm.name),
        env!("CARGO_PKG_VERSION")
    );
    head.push_str(
        "# 1. Upload each disk into its DataVolume (needs CDI's upload proxy; add\n\
         #    --namespace, --storage-class, --volume-mode=block or --insecure to suit):\n",
    );
    for (i, disk) in vm.disks.iter().enumerate() {
        // CDI converts to raw on upload; Filesystem-mode PVCs keep ~6% for the filesystem.
        let size = gib_ceil(disk.virtual_size.saturating_add(disk.virtual_size / 16));
        let _ = writeln!(
            head,
            "#      virtctl image-upload dv {} --size={size}Gi --image-path={}",
            data_volume_name(&vm.name, i),
            comment_safe(&shell_quote(&disk.path.to_string_lossy()))
        );
    }
    let _ = writeln!(
        head,
        "# 2. kubectl apply -f {}",
        comment_safe(&shell_quote(&format!("{}.yaml", vm.name)))
    );
    let _ = writeln!(head, "# 3. virtctl start {vm_label}");

    let (interfaces, networks, skipped) = network_parts(vm, opts);
    if networks.iter().any(|n| n.get("multus").is_some()) {
        head.push_str(
            "# Multus networks (--network/--bridge targets) must exist as NetworkAttachmentDefinitions.\n",
        );
    }
    for (i, src) in skipped {
        let _ = writeln!(
            head,
            "# NIC {i} (source network {}) is not attached: a VM has one pod network; map it with --network or --bridge.",
            comment_safe(&src)
        );
    }
    let bus = match opts.block_driver {
        BlockDriver::VirtioBlk => "virtio",
        BlockDriver::VirtioScsi => "scsi",
    };
    let mut disks = Vec::new();
    let mut volumes = Vec::new();
    for i in 0..vm.disks.len() {
        let mut disk = json!({ "name": format!("disk{i}"), "disk": { "bus": bus } });
        if i == 0 {
            disk["bootOrder"] = json!(1);
        }
        disks.push(disk);
        volumes.push(json!({
            "name": format!("disk{i}"),
            "dataVolume": { "name": data_volume_name(&vm.name, i) },
        }));
    }
    let bootloader = match vm.firmware {
        Firmware::Uefi => json!({ "efi": { "secureBoot": false } }),
        Firmware::Bios => json!({ "bios": {} }),
    };
    let mut features = json!({ "acpi": {}, "apic": {} });
    if is_windows(vm) {
        features["hyperv"] = json!({ "relaxed": {}, "vapic": {}, "spinlocks": { "spinlocks": 8191 } });
    }
    let memory = format!("{}Mi", vm.memory_mib);
    let mut annotations = Map::new();
    annotations.insert("v2x.example.invalid/source-name".into(), json!(vm.name));
    if let Some(t) = &vm.source_os_type {
        annotations.insert("v2x.example.invalid/source-os".into(), json!(t));
    }
    if let Some(g) = &vm.guest {
        annotations.insert("v2x.example.invalid/guest-os".into(), json!(g.os_type));
        if let Some(d) = &g.distro {
            annotations.insert("v2x.example.invalid/guest-distro".into(), json!(d));
        }
    }
    let doc = json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {
            "name": vm_label,
            "labels": { "app.kubernetes.io/managed-by": "v2x" },
            "annotations": annotations,
        },
        "spec": {
            "runStrategy": "Halted",
            "template": {
                "metadata": { "labels": { "kubevirt.io/domain": vm_label } },
                "spec": {
                    "domain": {
                        "cpu": { "cores": vm.vcpus },
                        "memory": { "guest": memory },
                        "resources": { "requests": { "memory": memory } },
                        "machine": { "type": "q35" },
                        "firmware": { "bootloader": bootloader },
                        "features": features,
                        "devices": {
                            "disks": disks,
                            "interfaces": interfaces,
                            "rng": {},
                        },
                    },
                    "networks": networks,
                    "volumes": volumes,
                },
            },
        },
    });
    let mut out = head;
    out.push_str("---\n");
    yaml_value(&doc, 0, &mut out);
    out
}

/// The interfaces and networks lists, and the NICs left out (index, source network).
fn network_parts(vm: &OutputVm, opts: &TargetOptions) -> (Vec<Value>, Vec<Value>, Vec<(usize, String)>) {
    let (mut interfaces, mut networks, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
    let mut pod_used = false;
    for (i, nic) in vm.nics.iter().enumerate() {
        let name = format!("nic{i}");
        let (binding, network) = match map_network(nic, opts) {
            NetTarget::Network(n) | NetTarget::Bridge(n) => {
                ("bridge", json!({ "name": name, "multus": { "networkName": n } }))
            }
            NetTarget::Default if !pod_used => {
                pod_used = true;
                ("masquerade", json!({ "name": name, "pod": {} }))
            }
            NetTarget::Default => {
                skipped.push((i, nic.network.clone().unwrap_or_else(|| "-".into())));
                continue;
            }
        };
        let mut iface = json!({ "name": name, "model": "virtio", binding: {} });
        if let Some(mac) = nic_mac(nic) {
            iface["macAddress"] = json!(mac);
        }
        interfaces.push(iface);
        networks.push(network);
    }
    (interfaces, networks, skipped)
}

/// Writes `v` as block-style YAML at `indent` spaces. Scalars are written as
/// JSON (a JSON string is a valid YAML double-quoted scalar), so no value can
/// be misread as another type or break the structure.
fn yaml_value(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, val) in m {
                let _ = write!(out, "{pad}{}:", yaml_key(k));
                yaml_child(val, indent, out);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for val in a {
                let _ = write!(out, "{pad}-");
                match val {
                    // A mapping in a list: its first key on the dash's line.
                    Value::Object(m) if !m.is_empty() => {
                        let mut inner = String::new();
                        yaml_value(val, indent + 2, &mut inner);
                        out.push(' ');
                        out.push_str(inner.trim_start());
                    }
                    _ => yaml_child(val, indent, out),
                }
            }
        }
        _ => {
            let _ = writeln!(out, "{pad}{}", scalar(v));
        }
    }
}

/// The part after `key:` or `-`: a nested block on the next lines, or a scalar.
fn yaml_child(v: &Value, indent: usize, out: &mut String) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            yaml_value(v, indent + 2, out);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            yaml_value(v, indent + 2, out);
        }
        _ => {
            let _ = writeln!(out, " {}", scalar(v));
        }
    }
}

/// A scalar, `{}` or `[]` in JSON form.
fn scalar(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// A mapping key: plain when it is a simple identifier, else JSON-quoted.
fn yaml_key(k: &str) -> String {
    let plain = !k.is_empty()
        && k.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && k.chars().all(|c| c.is_ascii_alphanumeric() || "._/-".contains(c));
    if plain {
        k.to_string()
    } else {
        scalar(&json!(k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(dns_label("My VM_01 (prod)", 63), "my-vm-01-prod");
        assert_eq!(dns_label("--", 63), "vm");
        assert_eq!(dns_label("Ünïcode", 63), "n-code");
        assert_eq!(dns_label(&"a".repeat(100), 63).len(), 63);
        assert_eq!(dns_label("abc-def", 4), "abc");
        let long = data_volume_name(&"x".repeat(100), 27);
        assert!(long.len() <= MAX_LABEL && long.ends_with("-sdab"), "{long}");
    }

    #[test]
    fn yaml_shapes() {
        let mut s = String::new();
        yaml_value(
            &json!({ "a": [{ "b": 1, "c": "x: y" }, "z"], "e": {}, "f": [] }),
            0,
            &mut s,
        );
        assert_eq!(s, "a:\n  - b: 1\n    c: \"x: y\"\n  - \"z\"\ne: {}\nf: []\n");
    }
}
