//! Slow tier: the two other Debian 12 "VMware" guests of
//! testdata/gen-debian-variants.sh, converted by `v2x convert` and booted on
//! virtio under QEMU (TCG) with testdata/boot-test.sh.
//!
//! - `lvm`: BIOS/MBR, a separate /boot on sda1 (named `/dev/sda1` in fstab),
//!   root on the LVM LV vmvg/root, and a **dracut** initramfs without virtio.
//! - `uefi`: GPT with an ESP holding only `\EFI\debian\grubx64.efi`, root on
//!   `/dev/sda2`, booted by OVMF with empty NVRAM, so only
//!   `\EFI\BOOT\BOOTX64.EFI` can boot.
//!
//! Each unconverted guest fails on virtio (proof that the boot test can
//! fail); the lvm one also boots on SATA (proof that the guest itself works).
//! Runs only with `V2X_SLOW_TESTS=1` (root, loop devices, the Debian mirror,
//! qemu-system-x86 and ovmf); with it set, anything missing fails.

mod common;

use common::{output_text, tool, tool_ok};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn enabled() -> bool {
    common::slow_tier()
}

/// The generated variant disks (built once per generator version).
fn variants_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| common::fixtures("gen-debian-variants.sh"))
}

/// `variants-info.txt`: one `key value` per line.
fn info() -> &'static BTreeMap<String, String> {
    static INFO: OnceLock<BTreeMap<String, String>> = OnceLock::new();
    INFO.get_or_init(|| {
        let text = std::fs::read_to_string(variants_dir().join("variants-info.txt")).unwrap();
        text.lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect()
    })
}

fn info_str(key: &str) -> &'static str {
    info()
        .get(key)
        .unwrap_or_else(|| panic!("{key} missing from variants-info.txt"))
}

fn info_u64(key: &str) -> u64 {
    info_str(key).parse().unwrap()
}

/// Converts `name` (in the variants directory) to qcow2 with `--json`, and
/// checks the source is unchanged and the output is `qemu-img check` clean.
/// Returns the qcow2, a raw copy of it (for offline checks) and the planned
/// guest paths.
fn convert(dir: &Path, name: &str) -> (PathBuf, PathBuf, Vec<String>) {
    let src = variants_dir().join(name);
    let before = common::sha256_file(&src);
    let qcow2 = dir.join("out.qcow2");
    let o = common::v2x_ok(&[
        "convert",
        "--json",
        src.to_str().unwrap(),
        qcow2.to_str().unwrap(),
    ]);
    assert_eq!(common::sha256_file(&src), before, "conversion changed the source");
    common::qemu_check(&qcow2);
    let raw = dir.join("out.raw");
    common::qemu_raw(&qcow2, &raw);
    (qcow2, raw, common::plan_paths(&o.stdout))
}

fn assert_planned(planned: &[String], want: &str) {
    assert!(
        planned.iter().any(|p| p == want),
        "{want} not planned: {planned:?}"
    );
}

fn e2fsck_clean(raw: &Path, offset: u64) {
    let dev = format!("{}?offset={offset}", raw.display());
    let o = tool("e2fsck", &["-fn", &dev]);
    assert!(o.status.success(), "e2fsck -fn at {offset}:\n{}", output_text(&o));
}

fn debugfs_cat(raw: &Path, offset: u64, path: &str) -> String {
    let dev = format!("{}?offset={offset}", raw.display());
    let o = tool_ok("debugfs", &["-R", &format!("cat {path}"), &dev]);
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Every byte range where `out` differs from `src` lies in one of `areas`
/// (offset, length): the conversion touched nothing else (partition tables,
/// LVM metadata, boot code).
fn assert_changes_within(src: &Path, out: &Path, areas: &[(u64, u64)]) {
    for (s, l) in common::differing_ranges(src, out) {
        assert!(
            areas.iter().any(|&(a, n)| s >= a && s + l <= a + n),
            "bytes {s}..{} changed outside the edited filesystems {areas:?}",
            s + l
        );
    }
}

fn boot(image: &Path, format: &str, firmware: &str, log: &Path) -> (bool, String, String) {
    let out = common::boot_test(image, format, "virtio", firmware, Some(log));
    let console = common::strip_ansi(&String::from_utf8_lossy(&std::fs::read(log).unwrap_or_default()));
    (out.status.success(), output_text(&out), console)
}

#[test]
fn lvm_guest_boots_on_sata() {
    if !enabled() {
        return;
    }
    let out = common::boot_test(&variants_dir().join("lvm.raw"), "raw", "sata", "bios", None);
    let text = output_text(&out);
    assert!(out.status.success(), "boot failed:\n{text}");
    assert!(text.contains("V2X-BOOT-OK vmlvm"), "{text}");
}

#[test]
fn unconverted_lvm_guest_cannot_find_root_on_virtio() {
    if !enabled() {
        return;
    }
    let dir = common::scratch("lvm-unconverted");
    let log = dir.path().join("console.log");
    let (ok, text, _) = boot(&variants_dir().join("lvm-sparse.vmdk"), "vmdk", "bios", &log);
    assert!(!ok, "{text}");
    assert!(
        text.contains("FAILED (dracut-timeout)"),
        "expected dracut to time out waiting for the root LV:\n{text}"
    );
}

#[test]
fn converted_lvm_dracut_guest_boots_on_virtio() {
    if !enabled() {
        return;
    }
    let dir = common::scratch("lvm-converted");
    let (qcow2, raw, planned) = convert(dir.path(), "lvm-sparse.vmdk");
    let kver = info_str("lvm_kernel");
    for want in [
        "/etc/fstab".to_string(),
        format!("/boot/initrd.img-{kver}"),
        "/etc/dracut.conf.d/v2x-virtio.conf".to_string(),
        "/etc/systemd/system/v2x-firstboot.service".to_string(),
    ] {
        assert_planned(&planned, &want);
    }

    // Offline: both filesystems fsck-clean, nothing but them changed, and
    // in each only blocks of planned files (or their directories).
    let boot_fs = (
        info_u64("lvm_boot_offset"),
        info_u64("lvm_pv_offset") - info_u64("lvm_boot_offset"),
    );
    let root_fs = (info_u64("lvm_lv_offset"), info_u64("lvm_lv_size"));
    e2fsck_clean(&raw, boot_fs.0);
    e2fsck_clean(&raw, root_fs.0);
    let src = variants_dir().join("lvm.raw");
    assert_changes_within(&src, &raw, &[boot_fs, root_fs]);
    common::assert_only_planned_changes(&src, &raw, boot_fs.0, boot_fs.1, "/boot", &planned);
    common::assert_only_planned_changes(&src, &raw, root_fs.0, root_fs.1, "/", &planned);
    let fstab = debugfs_cat(&raw, root_fs.0, "/etc/fstab");
    assert!(
        fstab.contains(&format!("UUID={} ", info_str("lvm_boot_uuid")))
            && fstab.contains("/dev/mapper/vmvg-root")
            && !fstab.contains("/dev/sda1"),
        "{fstab}"
    );
    let dracut = debugfs_cat(&raw, root_fs.0, "/etc/dracut.conf.d/v2x-virtio.conf");
    assert!(
        dracut.contains("add_drivers+=") && dracut.contains("virtio_blk"),
        "{dracut}"
    );

    // The boot: dracut finds vmvg/root on virtio-blk, /boot mounts by UUID.
    let log = dir.path().join("console.log");
    let (ok, text, console) = boot(&qcow2, "qcow2", "bios", &log);
    assert!(ok, "converted lvm guest did not boot on virtio:\n{text}");
    assert!(text.contains("V2X-BOOT-OK vmlvm"), "{text}");
    assert!(
        common::guest_sent_dhcp_request(&log),
        "the converted network configuration did not bring the virtio NIC up (no DHCP request)"
    );
    assert!(
        console.contains("Mounted boot.mount"),
        "/boot was not mounted:\n{console}"
    );
    assert!(
        common::firstboot_started(&console),
        "first-boot unit did not start:\n{console}"
    );
}

#[test]
fn unconverted_uefi_guest_has_nothing_to_boot_with_empty_nvram() {
    if !enabled() {
        return;
    }
    let dir = common::scratch("uefi-unconverted");
    let log = dir.path().join("console.log");
    let (ok, text, _) = boot(&variants_dir().join("uefi-sparse.vmdk"), "vmdk", "uefi", &log);
    assert!(!ok, "{text}");
    assert!(
        text.contains("FAILED (uefi-shell)") || text.contains("FAILED (no-boot-option)"),
        "expected OVMF to find no boot loader:\n{text}"
    );
}

#[test]
fn converted_uefi_guest_boots_on_virtio_with_empty_nvram() {
    if !enabled() {
        return;
    }
    let dir = common::scratch("uefi-converted");
    let (qcow2, raw, planned) = convert(dir.path(), "uefi-sparse.vmdk");
    let kver = info_str("uefi_kernel");
    for want in [
        "/boot/efi/EFI/BOOT/BOOTX64.EFI".to_string(),
        "/etc/fstab".to_string(),
        "/boot/grub/grub.cfg".to_string(),
        format!("/boot/initrd.img-{kver}"),
    ] {
        assert_planned(&planned, &want);
    }

    let esp_off = info_u64("uefi_esp_offset");
    let root_off = info_u64("uefi_root_offset");
    let size = std::fs::metadata(&raw).unwrap().len();
    // The root partition ends before the backup GPT (33 sectors).
    let esp = (esp_off, root_off - esp_off);
    let root = (root_off, size - 33 * 512 - root_off);
    let src = variants_dir().join("uefi.raw");
    e2fsck_clean(&raw, root.0);
    assert_changes_within(&src, &raw, &[esp, root]);
    common::assert_only_planned_changes(&src, &raw, root.0, root.1, "/", &planned);
    let fstab = debugfs_cat(&raw, root.0, "/etc/fstab");
    assert!(!fstab.contains("/dev/sda"), "{fstab}");
    let grub = debugfs_cat(&raw, root.0, "/boot/grub/grub.cfg");
    assert!(
        grub.contains(&format!("root=UUID={}", info_str("uefi_root_uuid"))) && !grub.contains("/dev/sda"),
        "{grub}"
    );

    // The ESP, cut out: fsck.fat clean, the old loader untouched, the
    // fallback a copy of it.
    let cut = |img: &Path, name: &str| {
        let data = std::fs::read(img).unwrap();
        let p = dir.path().join(name);
        std::fs::write(&p, &data[esp.0 as usize..(esp.0 + esp.1) as usize]).unwrap();
        p
    };
    let new_esp = cut(&raw, "esp-new.img");
    let old_esp = cut(&src, "esp-old.img");
    let fsck = tool("fsck.fat", &["-n", new_esp.to_str().unwrap()]);
    let text = output_text(&fsck);
    assert!(
        fsck.status.success() && text.lines().count() <= 2,
        "fsck.fat -n:\n{text}"
    );
    let mtype = |img: &Path, p: &str| tool_ok("mtype", &["-i", img.to_str().unwrap(), p]).stdout;
    let loader = mtype(&old_esp, "::/EFI/debian/grubx64.efi");
    assert_eq!(mtype(&new_esp, "::/EFI/debian/grubx64.efi"), loader);
    assert_eq!(mtype(&new_esp, "::/EFI/BOOT/BOOTX64.EFI"), loader);

    let log = dir.path().join("console.log");
    let (ok, text, console) = boot(&qcow2, "qcow2", "uefi", &log);
    assert!(ok, "converted uefi guest did not boot on virtio:\n{text}");
    assert!(text.contains("V2X-BOOT-OK vmuefi"), "{text}");
    assert!(
        common::guest_sent_dhcp_request(&log),
        "the converted network configuration did not bring the virtio NIC up (no DHCP request)"
    );
    assert!(
        common::firstboot_started(&console),
        "first-boot unit did not start:\n{console}"
    );
}
