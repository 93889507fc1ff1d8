//! `v2x inspect --json` on generated guest images, checked against golden
//! files in `testdata/golden/`. After a deliberate change, regenerate them
//! with `V2X_UPDATE_GOLDEN=1 cargo test --test inspect` and review the diff.

mod common;

use common::{fixtures, v2x_ok};
use serde_json::Value;
use std::path::Path;

/// Runs `v2x inspect --json` on `images` and compares with `testdata/golden/NAME.json`.
fn golden(name: &str, images: &[&Path]) -> Value {
    golden_masked(name, images, false)
}

/// Replaces every "uuid" value with a placeholder, for fixtures whose tools
/// (LVM, cryptsetup, mkfs.xfs) pick random UUIDs; the volume-layer tests
/// check those UUIDs against the tools' own reports.
fn mask_uuids(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if (k == "uuid" || k == "part_uuid") && x.is_string() {
                    *x = Value::String("<random>".into());
                } else {
                    mask_uuids(x);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(mask_uuids),
        _ => {}
    }
}

/// [`golden`], optionally with random UUIDs masked.
fn golden_masked(name: &str, images: &[&Path], random_uuids: bool) -> Value {
    let mut args = vec!["inspect", "--json"];
    let paths: Vec<String> = images.iter().map(|p| p.display().to_string()).collect();
    args.extend(paths.iter().map(String::as_str));
    let out = v2x_ok(&args);
    let mut got: Value = serde_json::from_slice(&out.stdout).expect("inspect --json prints JSON");
    // Image paths depend on where fixtures were generated.
    if let Some(disks) = got.get_mut("disks").and_then(Value::as_array_mut) {
        for d in disks {
            if let Some(p) = d.get_mut("path") {
                let file = Path::new(p.as_str().unwrap())
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .to_string();
                *p = Value::String(file);
            }
        }
    }
    if random_uuids {
        mask_uuids(&mut got);
    }
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/golden")
        .join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(&got).unwrap() + "\n";
    common::assert_golden(&file, &text);
    got
}

#[test]
fn mbr_ext4_debian() {
    let dir = fixtures("gen-guests.sh");
    let got = golden("mbr-ext4", &[&dir.join("mbr-ext4.img")]);
    let root = &got["roots"][0];
    assert_eq!(root["os_type"], "linux");
    assert_eq!(root["distro"], "debian");
    assert_eq!(root["version"], "12");
    assert_eq!(root["volume"], "sda1");
    assert_eq!(root["firmware"], "bios");
}

#[test]
fn gpt_esp_ext4_uefi() {
    let dir = fixtures("gen-guests.sh");
    let got = golden("gpt-esp-ext4", &[&dir.join("gpt-esp-ext4.img")]);
    let root = &got["roots"][0];
    assert_eq!(root["volume"], "sda2");
    assert_eq!(root["firmware"], "uefi");
    let mounts = root["mountpoints"].as_array().unwrap();
    assert!(
        mounts
            .iter()
            .any(|m| m["mountpoint"] == "/boot/efi" && m["volume"] == "sda1"),
        "{mounts:?}"
    );
}

/// Slow tier: the real Debian 12 guest made by debootstrap (the fixture the
/// Linux conversion boots), read from both VMDK forms.
#[test]
fn debian_guest_from_vmdk() {
    if !common::slow_tier() {
        return;
    }
    let dir = fixtures("gen-debian-guest.sh");
    let info = std::fs::read_to_string(dir.join("guest-info.txt")).unwrap();
    let kver = info
        .lines()
        .find_map(|l| l.strip_prefix("kernel "))
        .unwrap_or_else(|| panic!("guest-info.txt names no kernel: {info}"))
        .to_string();
    for image in ["guest-sparse.vmdk", "guest-stream.vmdk"] {
        let out = v2x_ok(&["inspect", "--json", dir.join(image).to_str().unwrap()]);
        let j: Value = serde_json::from_slice(&out.stdout).unwrap();
        let root = &j["roots"][0];
        assert_eq!(root["os_type"], "linux", "{image}");
        assert_eq!(root["distro"], "debian", "{image}");
        assert_eq!(root["version"], "12", "{image}");
        assert_eq!(root["volume"], "sda1", "{image}");
        assert_eq!(root["firmware"], "bios", "{image}");
        let linux = &root["linux"];
        assert_eq!(linux["bootloader"]["kind"], "grub2");
        assert_eq!(linux["bootloader"]["flavour"], "bios");
        let tools: Vec<&str> = linux["hypervisor_tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap())
            .collect();
        assert!(tools.contains(&"open-vm-tools"), "{tools:?}");
        let kernels = linux["kernels"].as_array().unwrap();
        let k = kernels
            .iter()
            .find(|k| k["version"] == kver.as_str())
            .unwrap_or_else(|| panic!("kernel {kver} not in {kernels:?}"));
        let blk = k["modules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "virtio_blk")
            .unwrap();
        assert_eq!(blk["builtin"], false);
        assert_eq!(
            blk["in_initramfs"], false,
            "the VMware-like initramfs has no virtio_blk"
        );
        assert_eq!(
            blk["module_paths"].as_array().unwrap().len(),
            1,
            "the kernel ships virtio_blk as a module"
        );
    }
}

#[test]
fn lvm_linear_and_striped_xfs_over_two_disks() {
    let dir = fixtures("gen-volumes.sh");
    let got = golden_masked(
        "lvm-xfs",
        &[&dir.join("lvm-disk1.img"), &dir.join("lvm-disk2.img")],
        true,
    );
    let vols = got["volumes"].as_array().unwrap();
    for lv in ["v2x-vg/lin", "v2x-vg/str-ipe"] {
        let v = vols
            .iter()
            .find(|v| v["name"] == lv)
            .unwrap_or_else(|| panic!("{lv} missing: {vols:?}"));
        assert_eq!(v["filesystem"]["type"], "xfs", "{lv}");
    }
}

#[test]
fn mbr_with_luks_swap_and_logical_partitions() {
    let dir = fixtures("gen-volumes.sh");
    let got = golden_masked("mbr-volumes", &[&dir.join("mbr.img")], true);
    let kinds: Vec<&str> = got["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["content"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["luks", "swap", "luks", "unknown"]);
}

#[test]
fn ntfs_windows_system_volumes() {
    let dir = fixtures("gen-windows.sh");
    // mkntfs picks a random volume serial, which is the NTFS "uuid".
    let got = golden_masked("ntfs-win10", &[&dir.join("win10.ntfs")], true);
    let root = &got["roots"][0];
    assert_eq!(root["os_type"], "windows");
    assert_eq!(root["product_name"], "Windows 10 Pro");
    assert_eq!(root["windows"]["hibernated"], true);
    let got = golden_masked("ntfs-win11", &[&dir.join("win11.ntfs")], true);
    assert_eq!(got["roots"][0]["arch"], "aarch64");
    let got = golden_masked("ntfs-srv2019", &[&dir.join("srv2019.ntfs")], true);
    assert_eq!(got["roots"][0]["windows"]["control_set"], "ControlSet002");
}

#[test]
fn btrfs_with_subvolumes() {
    let dir = fixtures("gen-btrfs.sh");
    let got = golden_masked("btrfs-subvolumes", &[&dir.join("main.img")], true);
    let fs = &got["volumes"][0]["filesystem"];
    assert_eq!(fs["type"], "btrfs");
    let subs = fs["subvolumes"].as_array().unwrap();
    let default: Vec<&Value> = subs.iter().filter(|s| s["is_default"] == true).collect();
    assert_eq!(default.len(), 1, "{subs:?}");
    assert_eq!(default[0]["path"], "@");
    assert!(
        subs.iter()
            .any(|s| s["path"] == "snapshots/1/snapshot" && s["read_only"] == true),
        "{subs:?}"
    );
}
