//! `v2x convert` with guest conversion on the generated Debian-like guests
//! of testdata/gen-guests.sh: the plan (`--dry-run`, `--json`), the edits
//! as the reference tools read them (e2fsck, debugfs, fsck.fat, mtools), and
//! proof that only planned files changed and the source did not.

mod common;

use common::{tool, tool_ok, v2x_ok};
use std::path::{Path, PathBuf};

fn guests() -> PathBuf {
    common::fixtures("gen-guests.sh")
}

/// MBR guest: sda1 (ext4 root) at 1 MiB.
const MBR_ROOT: (u64, u64) = (1 << 20, 0);
/// GPT guest: sda1 (ESP, 40 MiB) at 1 MiB, sda2 (ext4 root) after it.
const GPT_ESP: (u64, u64) = (2048 * 512, 81920 * 512);
const GPT_ROOT: (u64, u64) = (83968 * 512, 143360 * 512);

fn partition_len(img: &Path, start: u64) -> u64 {
    let out = tool_ok("sfdisk", &["-J", img.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["start"].as_u64().unwrap() * 512 == start)
        .map(|p| p["size"].as_u64().unwrap() * 512)
        .expect("partition")
}

fn e2fsck_clean(img: &Path, offset: u64) {
    let dev = format!("{}?offset={offset}", img.display());
    let out = tool("e2fsck", &["-fn", &dev]);
    assert!(
        out.status.success(),
        "e2fsck -fn {dev}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn debugfs(img: &Path, offset: u64, cmd: &str) -> String {
    let dev = format!("{}?offset={offset}", img.display());
    String::from_utf8_lossy(&tool_ok("debugfs", &["-R", cmd, &dev]).stdout).into_owned()
}

/// Converts `src` to raw with `--json`; returns (output path, stdout).
fn convert_raw(dir: &Path, src: &Path, extra: &[&str]) -> (PathBuf, Vec<u8>) {
    let out = dir.join("out.raw");
    let mut args = vec!["convert", "--json", "-O", "raw"];
    args.extend_from_slice(extra);
    args.extend([src.to_str().unwrap(), out.to_str().unwrap()]);
    let o = v2x_ok(&args);
    (out, o.stdout)
}

#[test]
fn mbr_guest_converts_and_only_planned_files_change() {
    let src = guests().join("mbr-ext4.img");
    let before = common::sha256_file(&src);
    let dir = common::scratch("convert-mbr");
    let (out, json) = convert_raw(dir.path(), &src, &[]);
    assert_eq!(common::sha256_file(&src), before, "the source changed");
    let planned = common::plan_paths(&json);
    for want in [
        "/etc/fstab",
        "/boot/grub/grub.cfg",
        "/boot/initrd.img-6.1.0-18-amd64",
    ] {
        assert!(
            planned.iter().any(|p| p == want),
            "{want} not in plan {planned:?}"
        );
    }
    let len = partition_len(&src, MBR_ROOT.0);
    e2fsck_clean(&out, MBR_ROOT.0);
    common::assert_only_planned_changes(&src, &out, MBR_ROOT.0, len, "/", &planned);
    // Nothing outside the root partition changed (MBR, GRUB's gap).
    for (s, l) in common::differing_ranges(&src, &out) {
        assert!(
            s >= MBR_ROOT.0 && s + l <= MBR_ROOT.0 + len,
            "bytes {s}+{l} changed outside sda1"
        );
    }
    let fstab = debugfs(&out, MBR_ROOT.0, "cat /etc/fstab");
    assert!(
        fstab.contains("UUID=3f0e2b1a-7c55-4d2e-9a61-0c1d2e3f4a5b / ext4"),
        "{fstab}"
    );
    assert!(!fstab.contains("/dev/sda1"), "{fstab}");
    // The appended archive: the old initramfs, 4-byte padding, then newc.
    let old = debugfs(&src, MBR_ROOT.0, "stat /boot/initrd.img-6.1.0-18-amd64");
    let new = debugfs(&out, MBR_ROOT.0, "stat /boot/initrd.img-6.1.0-18-amd64");
    let size = |s: &str| -> u64 {
        s.split("Size: ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(size(&new) > size(&old) + 110, "{old}\n{new}");
    // open-vm-tools no longer starts.
    let wants = debugfs(
        &out,
        MBR_ROOT.0,
        "ls -l /etc/systemd/system/multi-user.target.wants",
    );
    assert!(!wants.contains("open-vm-tools"), "{wants}");
    // /etc/network/interfaces names ens192 (the VMware NIC); the virtio NIC
    // is given that name by a udev rule in a directory that did not exist.
    let rule = debugfs(&out, MBR_ROOT.0, "cat /etc/udev/rules.d/70-v2x-net-name.rules");
    assert!(rule.contains(r#"DRIVERS=="virtio_net", NAME="ens192""#), "{rule}");
    let interfaces = debugfs(&out, MBR_ROOT.0, "cat /etc/network/interfaces");
    assert!(interfaces.contains("iface ens192 inet dhcp"), "{interfaces}");
}

#[test]
fn uefi_guest_gets_a_fallback_loader_on_its_esp() {
    let src = guests().join("gpt-esp-ext4.img");
    let dir = common::scratch("convert-gpt");
    let (out, json) = convert_raw(dir.path(), &src, &[]);
    let planned = common::plan_paths(&json);
    assert!(
        planned.iter().any(|p| p == "/boot/efi/EFI/BOOT/BOOTX64.EFI"),
        "{planned:?}"
    );
    e2fsck_clean(&out, GPT_ROOT.0);
    common::assert_only_planned_changes(&src, &out, GPT_ROOT.0, GPT_ROOT.1, "/", &planned);
    // The ESP, cut out and judged by fsck.fat and mtools.
    let esp = dir.path().join("esp.img");
    let data = std::fs::read(&out).unwrap();
    std::fs::write(&esp, &data[GPT_ESP.0 as usize..(GPT_ESP.0 + GPT_ESP.1) as usize]).unwrap();
    let fsck = tool("fsck.fat", &["-n", esp.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&fsck.stdout).into_owned() + &String::from_utf8_lossy(&fsck.stderr);
    assert!(
        fsck.status.success() && text.lines().count() <= 2,
        "fsck.fat -n:\n{text}"
    );
    let esp_arg = esp.to_str().unwrap();
    let boot = tool_ok("mtype", &["-i", esp_arg, "::/EFI/BOOT/BOOTX64.EFI"]).stdout;
    let shim = tool_ok("mtype", &["-i", esp_arg, "::/EFI/debian/shimx64.efi"]).stdout;
    assert_eq!(boot, shim, "BOOTX64.EFI must be the distribution's shim");
    let grub = tool_ok("mtype", &["-i", esp_arg, "::/EFI/BOOT/grubx64.efi"]).stdout;
    assert_eq!(
        grub,
        tool_ok("mtype", &["-i", esp_arg, "::/EFI/debian/grubx64.efi"]).stdout
    );
    tool_ok("mtype", &["-i", esp_arg, "::/EFI/BOOT/grub.cfg"]);
    // Converting the result again finds the fallback and adds nothing there.
    let again = dir.path().join("again.raw");
    let o = v2x_ok(&[
        "convert",
        "--dry-run",
        "--json",
        out.to_str().unwrap(),
        again.to_str().unwrap(),
    ]);
    assert!(
        !common::plan_paths(&o.stdout)
            .iter()
            .any(|p| p.starts_with("/boot/efi")),
        "second conversion touches the ESP again"
    );
}

#[test]
fn dry_run_prints_the_plan_and_writes_nothing() {
    let src = guests().join("mbr-ext4.img");
    let dir = common::scratch("convert-dry");
    let out = dir.path().join("out.qcow2");
    let o = v2x_ok(&[
        "convert",
        "--dry-run",
        src.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("== device-names:"), "{text}");
    assert!(text.contains("-/dev/sda1"), "{text}");
    assert!(
        text.contains("+UUID=3f0e2b1a-7c55-4d2e-9a61-0c1d2e3f4a5b"),
        "{text}"
    );
    assert!(text.contains("append "), "{text}");
    assert!(!out.exists(), "--dry-run wrote {}", out.display());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "--dry-run left files"
    );
    let o = v2x_ok(&[
        "convert",
        "--dry-run",
        "--json",
        src.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let plan = events.iter().find(|e| e["event"] == "plan").expect("plan event");
    assert_eq!(plan["root"]["volume"], "sda1");
    assert_eq!(plan["root"]["distro"], "debian");
    let ids = common::plan_step_ids(plan);
    assert!(
        ids.contains(&"device-names") && ids.contains(&"initramfs"),
        "{ids:?}"
    );
    assert!(
        !events.iter().any(|e| e["event"] == "done"),
        "a dry run reported a copy"
    );
}

#[test]
fn no_convert_copies_the_guest_unchanged() {
    let src = guests().join("mbr-ext4.img");
    let dir = common::scratch("convert-noconv");
    let out = dir.path().join("out.qcow2");
    v2x_ok(&[
        "convert",
        "-q",
        "--no-convert",
        src.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    common::qemu_compare(&src, &out);
}

#[test]
fn root_choice_is_checked_and_never_prompts() {
    let src = guests().join("mbr-ext4.img");
    let dir = common::scratch("convert-root");
    let out = dir.path().join("out.raw");
    let o = common::run_v2x(&[
        "convert",
        "--root",
        "sdb3",
        src.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(8), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--root sdb3") && err.contains("roots found: sda1 (Debian"),
        "{err}"
    );
    assert!(!out.exists());
    let o = common::run_v2x(&[
        "convert",
        "--root",
        "ask",
        src.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    v2x_ok(&[
        "convert",
        "-q",
        "-O",
        "raw",
        "--root",
        "/dev/sda1",
        src.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    e2fsck_clean(&out, MBR_ROOT.0);
}

#[test]
fn conversion_is_reproducible_with_source_date_epoch() {
    let src = guests().join("gpt-esp-ext4.img");
    let dir = common::scratch("convert-repro");
    let run = |name: &str| {
        let out = dir.path().join(name);
        let o = common::v2x()
            .env("SOURCE_DATE_EPOCH", "1600000000")
            .args(["convert", "-q", src.to_str().unwrap(), out.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        common::sha256_file(&out)
    };
    assert_eq!(run("a.qcow2"), run("b.qcow2"), "two conversions differ");
    // The stamp is the one asked for (2020-09-13 12:26:40 UTC), unlike the fixture's own times.
    let raw = dir.path().join("a.raw");
    common::qemu_raw(&dir.path().join("a.qcow2"), &raw);
    let dev = format!("{}?offset={}", raw.display(), GPT_ROOT.0);
    let stat = tool_ok(
        "debugfs",
        &["-R", "stat /etc/systemd/system/multi-user.target.wants", &dev],
    );
    let text = String::from_utf8_lossy(&stat.stdout);
    assert!(text.contains("ctime: 0x5f5e1000"), "{text}");
}
