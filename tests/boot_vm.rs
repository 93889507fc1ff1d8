//! Slow tier: a whole VM. The Debian 12 "VMware" guest of
//! testdata/gen-debian-guest.sh is packed into an OVA by testdata/make-ova.sh
//! (OVF + SHA256 manifest + streamOptimized VMDK), converted by v2x with
//! `--target local` (the domain XML must pass virt-xml-validate) and with
//! `--target qemu`, and the generated script itself is booted (TCG) to the
//! guest's marker, with a DHCP request from the source MAC.
//!
//! Runs only with `V2X_SLOW_TESTS=1`; then anything missing fails.

mod common;

use std::path::{Path, PathBuf};

const MAC: &str = "00:50:56:9a:00:01";

fn guest_ova(dir: &Path) -> PathBuf {
    let guest = common::fixtures("gen-debian-guest.sh");
    let ova = dir.join("vmguest.ova");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/make-ova.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .args([ova.to_str().unwrap(), "vmguest"])
        .arg(guest.join("guest-stream.vmdk"))
        .env("OVA_MAC", MAC)
        .output()
        .unwrap();
    assert!(out.status.success(), "make-ova.sh: {}", common::output_text(&out));
    ova
}

#[test]
fn ova_of_the_debian_guest_converts_and_its_qemu_script_boots() {
    if !common::slow_tier() {
        return;
    }
    let dir = common::scratch("boot-ova");
    let ova = guest_ova(dir.path());
    let before = common::sha256_file(&ova);

    // --target local (the default for an OVA): a valid libvirt domain.
    let local = dir.path().join("local");
    let o = common::v2x_ok(&[
        "convert",
        "--json",
        ova.to_str().unwrap(),
        local.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("\"event\":\"done\""), "{stdout}");
    let xml = local.join("vmguest.xml");
    let v = common::tool("virt-xml-validate", &[xml.to_str().unwrap(), "domain"]);
    assert!(
        v.status.success(),
        "virt-xml-validate: {}",
        common::output_text(&v)
    );
    let text = std::fs::read_to_string(&xml).unwrap();
    assert!(text.contains(MAC) && text.contains("vmguest-sda"), "{text}");
    common::qemu_check(&local.join("vmguest-sda"));

    // --target qemu: the script boots the converted guest on virtio.
    let qemu = dir.path().join("qemu");
    common::v2x_ok(&[
        "convert",
        "-q",
        ova.to_str().unwrap(),
        qemu.to_str().unwrap(),
        "--target",
        "qemu",
    ]);
    assert_eq!(common::sha256_file(&ova), before, "the OVA changed");
    let script = qemu.join("vmguest.sh");
    let log = dir.path().join("console.log");
    let out = std::process::Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/boot-test.sh"))
        .args(["--script", script.to_str().unwrap(), "1500"])
        .env("V2X_BOOT_LOG", &log)
        .env("V2X_BOOT_PCAP", log.with_extension("pcap"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the generated qemu script did not boot the guest:\n{}",
        common::output_text(&out)
    );
    assert!(common::output_text(&out).contains("V2X-BOOT-OK vmguest"));
    assert!(
        common::guest_sent_dhcp_request(&log),
        "the converted guest sent no DHCP request from its virtio NIC"
    );
}
