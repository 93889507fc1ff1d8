//! Whole VMs (fast tier): the two-disk guest of testdata/gen-guests.sh
//! (root on sda1, /var with dpkg's database on sdb1) described by a VMX and
//! packed into an OVA by testdata/make-ova.sh, converted for each target.
//! Judged by qemu-img (check, compare), e2fsck, debugfs and virt-xml-validate;
//! a tampered manifest, an escaping tar member and a broken batch entry fail.

mod common;

use common::{run_v2x, tool, tool_ok, v2x_ok};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The VM's two disks as monolithicSparse VMDKs (as VMware Workstation
/// keeps them) and as streamOptimized VMDKs (as an OVA carries them).
struct Disks {
    dir: PathBuf,
}

fn disks() -> &'static Disks {
    static D: OnceLock<Disks> = OnceLock::new();
    D.get_or_init(|| {
        let guests = common::fixtures("gen-guests.sh");
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "vm-disks-{}",
            &common::sha256_file(&guests.join("multi-sdb.img"))[..12]
        ));
        if !dir.join("done").exists() {
            let tmp = common::scratch("vm-disks-new");
            for d in ["sda", "sdb"] {
                let src = guests.join(format!("multi-{d}.img"));
                for (sub, name) in [
                    ("monolithicSparse", format!("multi-{d}.vmdk")),
                    ("streamOptimized", format!("stream-{d}.vmdk")),
                ] {
                    let out = tmp.path().join(name);
                    let sub = format!("subformat={sub}");
                    common::qemu_convert(&src, &out, "vmdk", &["-q", "-f", "raw", "-o", &sub]);
                }
            }
            std::fs::write(tmp.path().join("done"), b"").unwrap();
            let _ = std::fs::rename(tmp.keep(), &dir);
            assert!(dir.join("done").exists());
        }
        Disks { dir }
    })
}

impl Disks {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// A VMX for the two-disk guest in `dir`, its disks referenced by absolute path
/// through symlinks beside it (VMX file names are relative to the VMX).
fn write_vmx(dir: &Path) -> PathBuf {
    // Hard links: a symlink leading out of the VMX's directory is refused
    // without --allow-backing (tests/vmx_paths.rs).
    for d in ["sda", "sdb"] {
        std::fs::hard_link(
            disks().path(&format!("multi-{d}.vmdk")),
            dir.join(format!("multi-{d}.vmdk")),
        )
        .unwrap();
    }
    let vmx = dir.join("multi.vmx");
    std::fs::write(
        &vmx,
        r#".encoding = "UTF-8"
config.version = "8"
virtualHW.version = "19"
displayName = "multi-guest"
guestOS = "debian12-64"
memsize = "1536"
numvcpus = "2"
firmware = "bios"
scsi0.present = "TRUE"
scsi0.virtualDev = "pvscsi"
scsi0:0.present = "TRUE"
scsi0:0.fileName = "multi-sda.vmdk"
scsi0:1.present = "TRUE"
scsi0:1.fileName = "multi-sdb.vmdk"
sata0.present = "TRUE"
sata0:0.present = "TRUE"
sata0:0.deviceType = "cdrom-image"
sata0:0.fileName = "debian.iso"
ethernet0.present = "TRUE"
ethernet0.virtualDev = "vmxnet3"
ethernet0.networkName = "VM Network"
ethernet0.addressType = "static"
ethernet0.address = "00:50:56:3F:00:10"
"#,
    )
    .unwrap();
    vmx
}

/// An OVA of the two-disk guest, made by testdata/make-ova.sh.
fn make_ova(dir: &Path, name: &str) -> PathBuf {
    let ova = dir.join(format!("{name}.ova"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/make-ova.sh");
    tool_ok(
        "bash",
        &[
            script.to_str().unwrap(),
            ova.to_str().unwrap(),
            name,
            disks().path("stream-sda.vmdk").to_str().unwrap(),
            disks().path("stream-sdb.vmdk").to_str().unwrap(),
        ],
    );
    ova
}

fn events(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn event<'a>(evs: &'a [Value], name: &str) -> &'a Value {
    evs.iter()
        .find(|e| e["event"] == name)
        .unwrap_or_else(|| panic!("no {name} event in {evs:?}"))
}

fn e2fsck_partition(img: &Path, dir: &Path) {
    let raw = dir.join(format!("{}.raw", img.file_name().unwrap().to_string_lossy()));
    common::qemu_raw(img, &raw);
    let dev = format!("{}?offset={}", raw.display(), 2048 * 512);
    let out = tool("e2fsck", &["-fn", &dev]);
    assert!(
        out.status.success(),
        "e2fsck -fn {dev}: {}",
        common::output_text(&out)
    );
}

fn debugfs_cat(img: &Path, dir: &Path, file: &str) -> String {
    let raw = dir.join("cat.raw");
    let _ = std::fs::remove_file(&raw);
    common::qemu_raw(img, &raw);
    let dev = format!("{}?offset={}", raw.display(), 2048 * 512);
    String::from_utf8_lossy(&tool_ok("debugfs", &["-R", &format!("cat {file}"), &dev]).stdout).into_owned()
}

fn validate_domain(xml: &Path) {
    let out = tool("virt-xml-validate", &[xml.to_str().unwrap(), "domain"]);
    assert!(
        out.status.success(),
        "virt-xml-validate {}: {}",
        xml.display(),
        common::output_text(&out)
    );
}

#[test]
fn vmx_print_source_shows_both_disks_and_the_nic() {
    let dir = common::scratch("vmx-print");
    let vmx = write_vmx(dir.path());
    let out = v2x_ok(&["convert", "--print-source", "--json", vmx.to_str().unwrap()]);
    let spec: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(spec["name"], "multi-guest");
    assert_eq!(spec["source_kind"], "vmx");
    assert_eq!(
        (spec["vcpus"].as_u64(), spec["memory_mib"].as_u64()),
        (Some(2), Some(1536))
    );
    assert_eq!(spec["firmware"], "bios");
    let disks = spec["disks"].as_array().unwrap();
    assert_eq!(disks.len(), 2, "{spec}");
    assert!(disks[0]["location"]["path"]
        .as_str()
        .unwrap()
        .ends_with("multi-sda.vmdk"));
    assert!(disks[1]["location"]["path"]
        .as_str()
        .unwrap()
        .ends_with("multi-sdb.vmdk"));
    assert_eq!(spec["nics"][0]["mac"], "00:50:56:3f:00:10");
    assert_eq!(spec["nics"][0]["network"], "VM Network");
    let text = v2x_ok(&["convert", "--print-source", vmx.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("memory:    1536 MiB"));
}

#[test]
fn vmx_two_disk_guest_converts_for_libvirt() {
    let dir = common::scratch("vmx-local");
    let vmx = write_vmx(dir.path());
    let out = dir.path().join("out");
    let o = v2x_ok(&[
        "convert",
        vmx.to_str().unwrap(),
        out.to_str().unwrap(),
        "--json",
        "--network",
        "VM Network:default",
    ]);
    let evs = events(&o.stdout);
    // Inspection saw both disks: dpkg's database (on sdb1) names open-vm-tools.
    let plan = event(&evs, "plan");
    assert_eq!(plan["root"]["distro"], "debian", "{plan}");
    let steps = common::plan_step_ids(plan);
    assert!(
        steps.contains(&"device-names") && steps.contains(&"hypervisor-tools"),
        "{steps:?}"
    );
    let sda = out.join("multi-guest-sda");
    let sdb = out.join("multi-guest-sdb");
    for d in [&sda, &sdb] {
        common::qemu_check(d);
        e2fsck_partition(d, dir.path());
    }
    // fstab on the root disk now names /var's filesystem by UUID.
    let fstab = debugfs_cat(&sda, dir.path(), "/etc/fstab");
    assert!(
        fstab.contains("UUID=5b2c3d4e-6f70-4b8c-9dae-1f2a3b4c5d6e /var"),
        "{fstab}"
    );
    assert!(!fstab.contains("/dev/sd"), "{fstab}");
    // /var's disk was copied unchanged apart from planned edits (none here).
    common::qemu_compare(&disks().path("multi-sdb.vmdk"), &sdb);

    let xml = out.join("multi-guest.xml");
    validate_domain(&xml);
    let text = std::fs::read_to_string(&xml).unwrap();
    for needle in [
        "00:50:56:3f:00:10",
        "multi-guest-sda",
        "multi-guest-sdb",
        "virtio",
        "q35",
    ] {
        assert!(text.contains(needle), "{needle} not in {text}");
    }
    let done = event(&evs, "done");
    assert_eq!(done["firmware"], "bios");
    // The source was not touched; running again without --force is refused.
    let again = run_v2x(&["convert", vmx.to_str().unwrap(), out.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(7), "{}", common::output_text(&again));
}

#[test]
fn ova_converts_in_place_for_each_target() {
    let dir = common::scratch("ova-targets");
    let ova = make_ova(dir.path(), "ovaguest");
    let src_sum = common::sha256_file(&ova);
    let spec = v2x_ok(&["convert", "--print-source", "--json", ova.to_str().unwrap()]);
    let spec: Value = serde_json::from_slice(&spec.stdout).unwrap();
    assert_eq!(spec["source_kind"], "ova");
    assert_eq!(spec["disks"][0]["location"]["kind"], "member", "{spec}");
    assert_eq!(spec["nics"][0]["mac"], "00:50:56:9a:00:01");

    // --no-convert: the disks' guest bytes equal the VMDKs packed in the OVA.
    let plain = dir.path().join("plain");
    v2x_ok(&[
        "convert",
        ova.to_str().unwrap(),
        plain.to_str().unwrap(),
        "--no-convert",
        "--target",
        "null",
    ]);
    let copy = dir.path().join("copy");
    v2x_ok(&[
        "convert",
        ova.to_str().unwrap(),
        copy.to_str().unwrap(),
        "--no-convert",
        "--target",
        "local",
    ]);
    common::qemu_compare(&disks().path("stream-sda.vmdk"), &copy.join("ovaguest-sda"));
    common::qemu_compare(&disks().path("stream-sdb.vmdk"), &copy.join("ovaguest-sdb"));
    validate_domain(&copy.join("ovaguest.xml"));

    for (target, file) in [
        ("qemu", "ovaguest.sh"),
        ("kubevirt", "ovaguest.yaml"),
        ("openstack", "ovaguest.json"),
    ] {
        let out = dir.path().join(target);
        v2x_ok(&[
            "convert",
            ova.to_str().unwrap(),
            out.to_str().unwrap(),
            "--target",
            target,
            "-q",
        ]);
        assert!(out.join(file).is_file(), "{target}: no {file}");
        assert!(out.join("ovaguest-sda").is_file() && out.join("ovaguest-sdb").is_file());
        common::qemu_check(&out.join("ovaguest-sda"));
    }
    tool_ok(
        "sh",
        &["-n", dir.path().join("qemu/ovaguest.sh").to_str().unwrap()],
    );
    let os: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("openstack/ovaguest.json")).unwrap())
            .unwrap();
    assert!(os.to_string().contains("\"hw_disk_bus\":\"virtio\""), "{os}");
    // --target null leaves nothing behind.
    let entries: Vec<_> = std::fs::read_dir(&plain).map(|r| r.collect()).unwrap_or_default();
    assert!(entries.is_empty(), "null target left {entries:?}");
    assert_eq!(common::sha256_file(&ova), src_sum, "the OVA changed");
}

#[test]
fn tampered_manifest_fails_unless_told_not_to_check() {
    let dir = common::scratch("ova-manifest");
    let ova = make_ova(dir.path(), "mfguest");
    let mut bytes = std::fs::read(&ova).unwrap();
    let at = bytes
        .windows(7)
        .position(|w| w == b"SHA256(")
        .expect("manifest text");
    let eq = at + bytes[at..].iter().position(|b| *b == b'=').unwrap() + 2;
    bytes[eq] = if bytes[eq] == b'0' { b'1' } else { b'0' };
    std::fs::write(&ova, &bytes).unwrap();
    let out = dir.path().join("out");
    let r = run_v2x(&["convert", ova.to_str().unwrap(), out.to_str().unwrap()]);
    assert!(!r.status.success(), "a tampered manifest converted");
    let msg = common::output_text(&r);
    assert!(
        msg.to_lowercase().contains("manifest") || msg.contains("digest"),
        "{msg}"
    );
    assert!(!out.join("mfguest-sda").exists(), "a disk was written");
    v2x_ok(&[
        "convert",
        ova.to_str().unwrap(),
        out.to_str().unwrap(),
        "--no-verify-manifest",
        "--no-convert",
        "-q",
    ]);
    assert!(out.join("mfguest-sda").exists());
}

#[test]
fn escaping_tar_member_is_refused() {
    let dir = common::scratch("ova-escape");
    let ova = dir.path().join("evil.ova");
    let py = format!(
        "import tarfile, io\n\
         t = tarfile.open({:?}, 'w', format=tarfile.USTAR_FORMAT)\n\
         for name, data in [('evil.ovf', b'<?xml version=\"1.0\"?><Envelope xmlns=\"http://schemas.dmtf.org/ovf/envelope/1\"/>'), ('../evil.vmdk', b'x' * 1024)]:\n\
         \x20   i = tarfile.TarInfo(name); i.size = len(data); t.addfile(i, io.BytesIO(data))\n\
         t.close()\n",
        ova.to_str().unwrap()
    );
    tool_ok("python3", &["-c", &py]);
    let r = run_v2x(&[
        "convert",
        ova.to_str().unwrap(),
        dir.path().join("out").to_str().unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(7), "{}", common::output_text(&r));
    assert!(
        common::output_text(&r).contains("../evil.vmdk"),
        "{}",
        common::output_text(&r)
    );
}

#[test]
fn batch_converts_the_good_vms_and_reports_the_broken_one() {
    let dir = common::scratch("batch");
    let d = dir.path();
    make_ova(d, "good1");
    let vmx_dir = d.join("vmx");
    std::fs::create_dir(&vmx_dir).unwrap();
    write_vmx(&vmx_dir);
    // A qcow2 header with an impossible cluster size: corrupt, not "raw".
    let mut bad = vec![0u8; 4096];
    bad[..4].copy_from_slice(b"QFI\xfb");
    bad[4..8].copy_from_slice(&3u32.to_be_bytes());
    bad[20..24].copy_from_slice(&8u32.to_be_bytes());
    std::fs::write(d.join("broken.qcow2"), &bad).unwrap();
    std::fs::write(
        d.join("m.toml"),
        r#"
[defaults]
target = "local"
no-convert = true

[[vm]]
source = "good1.ova"
output = "out/good1"

[[vm]]
name = "broken"
source = "broken.qcow2"
output = "out/broken"

[[vm]]
source = "vmx/multi.vmx"
output = "out/multi"
name = "good2"
"#,
    )
    .unwrap();
    let r = run_v2x(&[
        "batch",
        d.join("m.toml").to_str().unwrap(),
        "--jobs",
        "2",
        "--json",
    ]);
    assert_eq!(r.status.code(), Some(4), "{}", common::output_text(&r));
    let evs = events(&r.stdout);
    let summary = event(&evs, "summary");
    assert_eq!(
        (summary["ok"].as_u64(), summary["failed"].as_u64()),
        (Some(2), Some(1)),
        "{summary}"
    );
    let vms = summary["vms"].as_array().unwrap();
    assert_eq!(vms[1]["vm"], "broken");
    assert_eq!(vms[1]["status"], "failed");
    assert!(vms[1]["error"].as_str().unwrap().contains("corrupt"), "{summary}");
    // Every event is tagged with its VM, and the broken one reported an error.
    assert!(
        evs.iter()
            .filter(|e| e["event"] != "summary")
            .all(|e| e["vm"].is_string()),
        "untagged event"
    );
    assert!(evs.iter().any(|e| e["event"] == "error" && e["vm"] == "broken"));
    assert!(d.join("out/good1/good1-sda").is_file() && d.join("out/good1/good1.xml").is_file());
    assert!(d.join("out/multi/good2-sdb").is_file());
    // The human summary names each VM.
    let _ = std::fs::remove_dir_all(d.join("out"));
    let h = run_v2x(&["batch", d.join("m.toml").to_str().unwrap()]);
    let text = String::from_utf8_lossy(&h.stdout);
    assert!(
        text.contains("2 converted, 1 failed") && text.contains("broken"),
        "{text}"
    );
}

#[test]
fn a_vm_that_fails_leaves_no_output_directory() {
    let dir = common::scratch("vm-fails");
    let vmx = write_vmx(dir.path());
    // The second disk's descriptor is gone: the VM cannot be converted whole.
    std::fs::remove_file(dir.path().join("multi-sdb.vmdk")).unwrap();
    let out = dir.path().join("out");
    let r = run_v2x(&["convert", vmx.to_str().unwrap(), out.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(3), "{}", common::output_text(&r));
    assert!(
        common::output_text(&r).contains("multi-sdb.vmdk"),
        "{}",
        common::output_text(&r)
    );
    assert!(!out.exists(), "a failed conversion left {}", out.display());
    // Zero vCPUs are refused before anything is written.
    let vmx0 = dir.path().join("zero.vmx");
    let text = std::fs::read_to_string(&vmx)
        .unwrap()
        .replace("numvcpus = \"2\"", "numvcpus = \"0\"");
    std::fs::write(&vmx0, text).unwrap();
    let r = run_v2x(&["convert", vmx0.to_str().unwrap(), out.to_str().unwrap()]);
    assert!(!r.status.success(), "zero vCPUs converted");
    assert!(!out.exists(), "a refused conversion left {}", out.display());
}
