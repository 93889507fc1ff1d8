//! Disk paths in VMX files (fast tier): ESXi names disks on other datastores
//! by absolute path and Workstation on Windows by drive path; relative paths
//! may climb out with `..` or through a symlink. A disk outside the VMX's
//! directory is read only where the user allowed it (--allow-backing), like
//! a VMDK's extents; a foreign absolute path whose file was copied beside the
//! VMX falls back to that file, with a note. Outputs judged by qemu-img.

mod common;

use common::{run_v2x, v2x_ok};
use std::path::{Path, PathBuf};

/// A 4 MiB monolithicSparse VMDK at `path` holding a pattern from `seed`.
fn make_vmdk(path: &Path, seed: u8) {
    let raw = path.with_extension("raw");
    let mut data = vec![0u8; 4 << 20];
    for (i, b) in data.iter_mut().enumerate().skip(1 << 20).take(1 << 20) {
        *b = (i % 251) as u8 ^ seed;
    }
    std::fs::write(&raw, &data).unwrap();
    common::qemu_convert(&raw, path, "vmdk", &["-q", "-f", "raw"]);
    std::fs::remove_file(raw).unwrap();
}

/// Writes `dir/vm/t.vmx` naming `files` as scsi0:0, scsi0:1, ...
fn write_vmx(dir: &Path, files: &[&str]) -> PathBuf {
    let vm = dir.join("vm");
    std::fs::create_dir_all(&vm).unwrap();
    let mut text = String::from("config.version = \"8\"\nvirtualHW.version = \"19\"\nmemsize = \"512\"\n");
    for (i, f) in files.iter().enumerate() {
        text.push_str(&format!(
            "scsi0:{i}.present = \"TRUE\"\nscsi0:{i}.fileName = \"{f}\"\n"
        ));
    }
    let vmx = vm.join("t.vmx");
    std::fs::write(&vmx, text).unwrap();
    vmx
}

fn convert(vmx: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "convert",
        "-q",
        "-n",
        "t",
        vmx.to_str().unwrap(),
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run_v2x(&args)
}

fn assert_denied(o: &std::process::Output, out: &Path) {
    let text = common::output_text(o);
    assert_eq!(o.status.code(), Some(7), "{text}");
    assert!(text.contains("--allow-backing"), "{text}");
    assert!(!out.exists(), "a refused conversion left {}", out.display());
}

#[test]
fn absolute_path_outside_the_vmx_directory_needs_allow_backing() {
    let dir = common::scratch("vmx-abs");
    let elsewhere = dir.path().join("datastore2");
    std::fs::create_dir(&elsewhere).unwrap();
    let disk = elsewhere.join("d.vmdk");
    make_vmdk(&disk, 1);
    let vmx = write_vmx(dir.path(), &[disk.to_str().unwrap()]);
    let out = dir.path().join("out");
    assert_denied(&convert(&vmx, &out, &[]), &out);
    let o = convert(&vmx, &out, &["--allow-backing", elsewhere.to_str().unwrap()]);
    assert!(o.status.success(), "{}", common::output_text(&o));
    common::qemu_compare(&disk, &out.join("t-sda"));
}

#[test]
fn relative_paths_that_climb_out_need_allow_backing() {
    let dir = common::scratch("vmx-rel");
    let elsewhere = dir.path().join("shared");
    std::fs::create_dir(&elsewhere).unwrap();
    let disk = elsewhere.join("d.vmdk");
    make_vmdk(&disk, 2);
    // One by `..`, one through a symlink that looks local.
    let vmx = write_vmx(dir.path(), &["../shared/d.vmdk"]);
    let out = dir.path().join("out");
    assert_denied(&convert(&vmx, &out, &[]), &out);
    std::os::unix::fs::symlink("../shared/d.vmdk", dir.path().join("vm/link.vmdk")).unwrap();
    let vmx = write_vmx(dir.path(), &["link.vmdk"]);
    assert_denied(&convert(&vmx, &out, &[]), &out);
    let o = convert(&vmx, &out, &["--allow-backing", "any"]);
    assert!(o.status.success(), "{}", common::output_text(&o));
    common::qemu_compare(&disk, &out.join("t-sda"));
}

#[test]
fn foreign_paths_fall_back_to_the_file_beside_the_vmx() {
    let dir = common::scratch("vmx-foreign");
    let vmx = write_vmx(
        dir.path(),
        &[
            "/vmfs/volumes/5f2a1c3e-datastore1/web01/web01.vmdk",
            "D:\\VMs\\web01\\web01_1.vmdk",
        ],
    );
    let vm = vmx.parent().unwrap();
    make_vmdk(&vm.join("web01.vmdk"), 3);
    make_vmdk(&vm.join("web01_1.vmdk"), 4);
    let text = common::output_text(&v2x_ok(&["convert", "--print-source", vmx.to_str().unwrap()]));
    for needle in [
        "'/vmfs/volumes/5f2a1c3e-datastore1/web01/web01.vmdk' is not on this machine",
        "'D:\\VMs\\web01\\web01_1.vmdk' is not on this machine",
        &vm.join("web01_1.vmdk").display().to_string(),
    ] {
        assert!(text.contains(needle), "{needle} not in {text}");
    }
    let out = dir.path().join("out");
    let o = convert(&vmx, &out, &[]);
    assert!(o.status.success(), "{}", common::output_text(&o));
    common::qemu_compare(&vm.join("web01.vmdk"), &out.join("t-sda"));
    common::qemu_compare(&vm.join("web01_1.vmdk"), &out.join("t-sdb"));
}

#[test]
fn missing_disk_files_are_named() {
    let dir = common::scratch("vmx-missing");
    for name in [
        "/vmfs/volumes/ds/gone/gone.vmdk",
        "D:\\VMs\\gone.vmdk",
        "gone.vmdk",
    ] {
        let vmx = write_vmx(dir.path(), &[name]);
        let out = dir.path().join("out");
        let o = convert(&vmx, &out, &[]);
        let text = common::output_text(&o);
        assert!(!o.status.success(), "{text}");
        assert!(text.contains(name), "{name} not in {text}");
        assert!(!out.exists());
    }
}

#[test]
fn urls_are_refused() {
    let dir = common::scratch("vmx-url");
    for name in ["http://example.com/x.vmdk", "nfs://host/x.vmdk", "file:x.vmdk"] {
        let vmx = write_vmx(dir.path(), &[name]);
        let o = run_v2x(&["convert", "--print-source", vmx.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(7), "{name}: {}", common::output_text(&o));
    }
}
