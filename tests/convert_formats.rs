//! Every input format through the CLI, judged by qemu-img: VMDK, VHD, VHDX
//! and VDI fixtures convert to qcow2 (check-clean, compare-equal) and to raw
//! (byte-equal to qemu-img's raw); qcow2 converts to every output format.

mod common;
use common::*;
use std::path::Path;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// qemu-img's format name for a fixture. Fixed VHDs must be named: qemu
/// probes them as raw (it looks for the footer only at offset 0).
fn qemu_format(name: &str) -> &'static str {
    match Path::new(name).extension().and_then(|e| e.to_str()) {
        Some("vhd") => "vpc",
        Some("vhdx") => "vhdx",
        Some("vdi") => "vdi",
        Some("vmdk") => "vmdk",
        _ => "raw",
    }
}

/// Converts `name` from `dir` to qcow2 and raw with v2x and checks both against qemu-img.
fn check_source(dir: &Path, name: &str, out: &Path) {
    let src = dir.join(name);
    let fmt = qemu_format(name);
    let q = out.join(format!("{name}.qcow2"));
    v2x_ok(&["convert", "-q", s(&src), s(&q)]);
    qemu_check(&q);
    tool_ok("qemu-img", &["compare", "-f", fmt, "-F", "qcow2", s(&src), s(&q)]);
    let ours = out.join(format!("{name}.v2x.raw"));
    let theirs = out.join(format!("{name}.qemu.raw"));
    v2x_ok(&["convert", "-q", "-O", "raw", s(&src), s(&ours)]);
    tool_ok(
        "qemu-img",
        &["convert", "-f", fmt, "-O", "raw", s(&src), s(&theirs)],
    );
    assert_same_bytes(&ours, &theirs);
    for f in [q, ours, theirs] {
        std::fs::remove_file(f).unwrap();
    }
}

#[test]
fn vmdk_fixtures_convert_like_qemu_img() {
    let dir = fixtures("gen-vmdk.sh");
    let out = scratch("vmdk-in");
    let list = std::fs::read_to_string(dir.join("images.txt")).unwrap();
    let names: Vec<&str> = list.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(names.len() >= 9, "{names:?}");
    for name in names {
        check_source(&dir, name, out.path());
    }
}

#[test]
fn vhd_vhdx_vdi_fixtures_convert_like_qemu_img() {
    let dir = fixtures("gen-vhd.sh");
    let out = scratch("vhd-in");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if ["vhd", "vhdx", "vdi"].contains(&qemu_format(&name)) || name.ends_with(".vhd") {
            check_source(&dir, &name, out.path());
            n += 1;
        }
    }
    assert!(n >= 9, "only {n} fixtures");
}

#[test]
fn qcow2_converts_to_every_output_format() {
    let fx = qcow2_fixtures();
    let out = scratch("outputs");
    let src = fx.join("chain-top.qcow2");
    for (fmt, qfmt, ext) in [
        ("vmdk", "vmdk", "vmdk"),
        ("vpc", "vpc", "vhd"),
        ("vhdx", "vhdx", "vhdx"),
    ] {
        let a = out.path().join(format!("a.{ext}"));
        let b = out.path().join(format!("b.{ext}"));
        for o in [&a, &b] {
            v2x_ok(&["convert", "-q", "-O", fmt, s(&src), s(o)]);
        }
        assert_same_bytes(&a, &b); // deterministic
        if qfmt != "vpc" {
            // qemu-img check does not support vpc.
            qemu_check(&a);
        }
        let info =
            String::from_utf8_lossy(&tool_ok("qemu-img", &["info", "-f", qfmt, s(&a)]).stdout).to_string();
        assert!(info.contains(&format!("file format: {qfmt}")), "{info}");
        // Non-strict compare: the VHD is rounded up to 1 MiB, and the extra must read as zero.
        tool_ok(
            "qemu-img",
            &["compare", "-f", "qcow2", "-F", qfmt, s(&src), s(&a)],
        );
        // And v2x reads its own output back.
        v2x_ok(&["compare", s(&src), s(&a)]);
    }
}

#[test]
fn vhd_output_reports_the_rounded_size() {
    let fx = qcow2_fixtures();
    let out = scratch("vhd-round");
    let dst = out.path().join("o.vhd");
    // 24 MiB + 3 sectors: not a multiple of 1 MiB.
    let r = v2x_ok(&["convert", s(&fx.join("pattern.raw")), s(&dst)]);
    let text = String::from_utf8_lossy(&r.stderr).to_string() + &String::from_utf8_lossy(&r.stdout);
    assert!(text.contains("25165824") || text.contains("rounded"), "{text}");
    let info = String::from_utf8_lossy(
        &tool_ok("qemu-img", &["info", "--output=json", "-f", "vpc", s(&dst)]).stdout,
    )
    .to_string();
    assert!(info.contains("\"virtual-size\": 26214400"), "{info}");
}
