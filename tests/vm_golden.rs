//! Golden tests for the VMX and OVF parsers on fixtures written for v2x
//! (`testdata/vmx/*.vmx`, `testdata/ovf/*.ovf`). Each spec is compared with
//! `testdata/golden/vm/NAME.txt` (`render()`) and `NAME.json`. Regenerate with
//! `V2X_UPDATE_GOLDEN=1 cargo test --test vm_golden` and review the diff.

mod common;

use std::path::{Path, PathBuf};

/// The fixtures of `dir` with extension `ext`, sorted, as paths relative to
/// the package root (the test's working directory), so goldens hold relative paths.
fn fixtures(dir: &str, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no .{ext} fixtures in {dir}");
    v
}

fn golden_dir() -> &'static Path {
    Path::new("testdata/golden/vm")
}

#[test]
fn vmx_goldens() {
    for p in fixtures("testdata/vmx", "vmx") {
        let name = p.file_stem().unwrap().to_str().unwrap();
        common::check_vm_golden(golden_dir(), name, v2x::vm::vmx::load(&p), "", "");
    }
}

#[test]
fn ovf_goldens() {
    for p in fixtures("testdata/ovf", "ovf") {
        let name = p.file_stem().unwrap().to_str().unwrap();
        common::check_vm_golden(golden_dir(), name, v2x::vm::ovf::load(&p), "", "");
    }
}

/// An OVF (often downloaded) may only name files beside it. A VMX may name
/// any path, checked when the disk is opened (tests/vmx_paths.rs).
#[test]
fn ovf_refuses_escaping_files_on_load() {
    let dir = tempfile::tempdir().unwrap();
    let ovf = dir.path().join("x.ovf");
    let text = std::fs::read_to_string("testdata/ovf/vbox-efi.ovf")
        .unwrap()
        .replace("fedora-disk001.vmdk", "%2E%2E/fedora-disk001.vmdk");
    std::fs::write(&ovf, text).unwrap();
    assert!(matches!(
        v2x::vm::ovf::load(&ovf),
        Err(v2x_formats::Error::Denied(_))
    ));
}

#[test]
fn oversized_descriptor_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.vmx");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(v2x::vm::MAX_DESCRIPTOR_BYTES + 1).unwrap();
    assert!(matches!(
        v2x::vm::vmx::load(&big),
        Err(v2x_formats::Error::LimitExceeded { .. })
    ));
    assert!(matches!(
        v2x::vm::ovf::load(&big),
        Err(v2x_formats::Error::LimitExceeded { .. })
    ));
}
