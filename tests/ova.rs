//! OVA archives built with the system tar around qemu-img-made disks:
//! members are read in place and must equal qemu-img's raw conversion of
//! the original; manifests are verified; escaping members are refused.

mod common;

use common::{qemu_convert, qemu_raw, scratch, sha256_file, tool_ok};
use sha2::Digest;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use v2x::vm::open::{open_disk, open_location};
use v2x::vm::ova::{self, OvaArchive};
use v2x::vm::{manifest, DiskLocation};
use v2x_formats::block::BlockSource;
use v2x_formats::{Error, OpenOptions};

const DISK_SIZE: u64 = 8 << 20;

/// A raw disk with recognisable data in a few places, and holes between.
fn make_raw(dir: &Path) -> PathBuf {
    let p = dir.join("src.raw");
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(DISK_SIZE).unwrap();
    for (i, at) in [0u64, 65536 * 3 + 512, 5 << 20, DISK_SIZE - 4096]
        .into_iter()
        .enumerate()
    {
        let data: Vec<u8> = (0..4096u32).map(|j| (j * 31 + i as u32 * 7) as u8 | 1).collect();
        f.write_all_at(&data, at).unwrap();
    }
    p
}

/// `qemu-img convert` of `src` into `out` as `fmt` with `-o opts`.
/// A small OVF 1.x: one VirtualSystem with one CPU, 512 MiB and one disk,
/// whose file is `href`.
fn minimal_ovf(href: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"
    xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
    xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">
  <References>
    <File ovf:href="{href}" ovf:id="file1"/>
  </References>
  <DiskSection>
    <Info>disks</Info>
    <Disk ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:capacity="{DISK_SIZE}"
        ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <VirtualSystem ovf:id="ova-test">
    <Info>a test VM</Info>
    <Name>ova-test</Name>
    <VirtualHardwareSection>
      <Info>hardware</Info>
      <Item>
        <rasd:ElementName>1 CPU</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>1</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:ElementName>512 MB</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>512</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:ElementName>SCSI Controller 0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>lsilogic</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:ElementName>Hard Disk 1</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#
    )
}

/// Builds `name.ova` in `dir` from `files` (paths relative to `dir`) with
/// `tar --format=FORMAT`, the OVF first.
fn tar(dir: &Path, name: &str, format: &str, files: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let mut args = vec![
        "--format",
        format,
        "-cf",
        out.to_str().unwrap(),
        "-C",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(files);
    tool_ok("tar", &args);
    out
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha1_file(p: &Path) -> String {
    hex(&sha1::Sha1::digest(std::fs::read(p).unwrap()))
}

/// The disk `href` of the OVA, opened in place, equals the raw oracle.
fn assert_member_matches(ova_path: &Path, href: &str, oracle_sha: &str) {
    let ova = OvaArchive::open(ova_path).unwrap();
    let loc = ova.resolve(href, false).unwrap();
    let DiskLocation::Member { offset, len, .. } = &loc else {
        panic!("{loc:?}")
    };
    assert!(offset % 512 == 0 && *len > 0);
    let img = open_location(&loc, &OpenOptions::default(), None).unwrap();
    assert_eq!(img.size(), DISK_SIZE);
    assert_eq!(
        common::image_sha256(img.as_ref()),
        oracle_sha,
        "{}!{href}",
        ova_path.display()
    );
    assert!(
        img.info().path.ends_with(&format!("!{href}")),
        "{}",
        img.info().path
    );
}

#[test]
fn stream_optimized_member_reads_in_place_ustar_pax_gnu() {
    let d = scratch("ova-formats");
    let raw = make_raw(d.path());
    let vmdk = d.path().join("disk1.vmdk");
    qemu_convert(&raw, &vmdk, "vmdk", &["-o", "subformat=streamOptimized"]);
    let oracle = d.path().join("oracle.raw");
    qemu_raw(&vmdk, &oracle);
    let want = sha256_file(&oracle);
    std::fs::write(d.path().join("vm.ovf"), minimal_ovf("disk1.vmdk")).unwrap();
    // A long name: ustar splits it into prefix/name, GNU writes an 'L' header,
    // pax an 'x' header.
    let long_dir = "d".repeat(60) + "/" + &"e".repeat(60);
    std::fs::create_dir_all(d.path().join(&long_dir)).unwrap();
    let long = format!("{long_dir}/{}.vmdk", "f".repeat(90));
    std::fs::copy(&vmdk, d.path().join(&long)).unwrap();
    // A name ustar cannot hold at all (one component over 100 bytes).
    let longer = "g".repeat(120) + ".vmdk";
    std::fs::copy(&vmdk, d.path().join(&longer)).unwrap();
    for format in ["ustar", "pax", "gnu"] {
        let mut files = vec!["vm.ovf", "disk1.vmdk", &long];
        if format != "ustar" {
            files.push(&longer);
        }
        let ova = tar(d.path(), &format!("{format}.ova"), format, &files);
        assert_member_matches(&ova, "disk1.vmdk", &want);
        assert_member_matches(&ova, &long, &want);
        if format != "ustar" {
            assert_member_matches(&ova, &longer, &want);
        }
    }
    // Other formats work as members too.
    let qcow2 = d.path().join("disk2.qcow2");
    qemu_convert(&raw, &qcow2, "qcow2", &[]);
    let ova = tar(d.path(), "q.ova", "ustar", &["vm.ovf", "disk2.qcow2"]);
    assert_member_matches(&ova, "disk2.qcow2", &sha256_file(&raw));
}

#[test]
fn manifest_good_then_one_flipped_digit() {
    let d = scratch("ova-mf");
    let raw = make_raw(d.path());
    let vmdk = d.path().join("disk1.vmdk");
    qemu_convert(&raw, &vmdk, "vmdk", &["-o", "subformat=streamOptimized"]);
    std::fs::write(d.path().join("vm.ovf"), minimal_ovf("disk1.vmdk")).unwrap();
    let good = format!(
        "SHA1(vm.ovf)= {}\nSHA256(disk1.vmdk)= {}\n",
        sha1_file(&d.path().join("vm.ovf")),
        sha256_file(&vmdk)
    );
    std::fs::write(d.path().join("vm.mf"), &good).unwrap();
    let ova_path = tar(d.path(), "good.ova", "ustar", &["vm.ovf", "vm.mf", "disk1.vmdk"]);
    let ova = OvaArchive::open(&ova_path).unwrap();
    let mf = ova.members.iter().find(|m| m.name == "vm.mf").unwrap();
    let entries = manifest::parse(&ova.read_text(mf, "manifest").unwrap()).unwrap();
    manifest::verify(&ova_path, &ova.members, &entries).unwrap();
    // The whole load: the disk is the member, read in place.
    let disk = ova.members.iter().find(|m| m.name == "disk1.vmdk").unwrap();
    let spec = ova::load(&ova_path, true).unwrap();
    assert_eq!(spec.source_kind, v2x::vm::SourceKind::Ova);
    assert_eq!((spec.vcpus, spec.memory_mib, spec.disks.len()), (1, 512, 1));
    assert_eq!(
        spec.disks[0].location,
        DiskLocation::Member {
            tar: ova_path.clone(),
            member: "disk1.vmdk".into(),
            offset: disk.offset,
            len: disk.len,
            gzip: false,
        }
    );
    assert_eq!(spec.disks[0].capacity, Some(DISK_SIZE));
    assert!(
        !spec.notes.iter().any(|n| n.contains("manifest")),
        "{:?}",
        spec.notes
    );

    let last = good.trim_end().len() - 1;
    let mut bad = good.clone();
    let flipped = if &good[last..=last] == "0" { "1" } else { "0" };
    bad.replace_range(last..=last, flipped);
    std::fs::write(d.path().join("vm.mf"), &bad).unwrap();
    let ova_path = tar(d.path(), "bad.ova", "ustar", &["vm.ovf", "vm.mf", "disk1.vmdk"]);
    let e = ova::load(&ova_path, true).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Corrupt { .. }), "{msg}");
    assert!(
        msg.contains("!disk1.vmdk") && msg.contains(&sha256_file(&vmdk)),
        "{msg}"
    );
    assert!(msg.contains(bad.trim_end().rsplit(' ').next().unwrap()), "{msg}");
}

/// One ustar header, written byte by byte.
fn ustar_header(name: &str, size: u64) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = b'0';
    h[257..265].copy_from_slice(b"ustar\x0000");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

#[test]
fn member_named_dot_dot_evil_is_refused() {
    let d = scratch("ova-evil");
    let ovf = minimal_ovf("disk1.vmdk");
    let mut t = ustar_header("vm.ovf", ovf.len() as u64);
    t.extend_from_slice(ovf.as_bytes());
    t.resize(t.len().div_ceil(512) * 512, 0);
    t.extend(ustar_header("../evil", 4));
    t.extend_from_slice(b"evil");
    t.resize(t.len().div_ceil(512) * 512 + 1024, 0);
    let p = d.path().join("evil.ova");
    std::fs::write(&p, &t).unwrap();
    // The system tar agrees this is a valid archive with that member.
    let listing = tool_ok("tar", &["tf", p.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&listing.stdout).contains("../evil"));
    let e = ova::load(&p, false).unwrap_err();
    assert!(matches!(e, Error::Denied(_)), "{e}");
    assert!(e.to_string().contains("../evil"), "{e}");
    assert!(!d.path().parent().unwrap().join("evil").exists());
}

#[test]
fn gzip_member_round_trips() {
    let d = scratch("ova-gzip");
    let raw = make_raw(d.path());
    let vmdk = d.path().join("disk1.vmdk");
    qemu_convert(&raw, &vmdk, "vmdk", &["-o", "subformat=streamOptimized"]);
    tool_ok("gzip", &["-k", vmdk.to_str().unwrap()]);
    let ovf =
        minimal_ovf("disk1.vmdk.gz").replace(r#"ovf:id="file1""#, r#"ovf:id="file1" ovf:compression="gzip""#);
    std::fs::write(d.path().join("vm.ovf"), ovf).unwrap();
    let ova_path = tar(d.path(), "gz.ova", "ustar", &["vm.ovf", "disk1.vmdk.gz"]);
    let ova = OvaArchive::open(&ova_path).unwrap();
    let loc = ova.resolve("disk1.vmdk.gz", true).unwrap();
    let work = scratch("ova-gzip-work");
    let img = open_location(&loc, &OpenOptions::default(), Some(work.path())).unwrap();
    assert_eq!(common::image_sha256(img.as_ref()), sha256_file(&raw));
    // The scratch file is anonymous: nothing is left in the directory.
    assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0);
    // Through load, the OVF's ovf:compression makes the member a gzip one.
    let spec = ova::load(&ova_path, false).unwrap();
    assert_eq!(spec.disks[0].location, loc);
    let img = open_disk(&spec.disks[0], &OpenOptions::default(), Some(work.path())).unwrap();
    assert_eq!(img.size(), DISK_SIZE);
}

#[test]
fn member_with_a_backing_file_is_denied() {
    let d = scratch("ova-backing");
    let raw = make_raw(d.path());
    let child = d.path().join("child.qcow2");
    tool_ok(
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "-b",
            "src.raw",
            "-F",
            "raw",
            child.to_str().unwrap(),
        ],
    );
    std::fs::write(d.path().join("vm.ovf"), minimal_ovf("child.qcow2")).unwrap();
    let ova_path = tar(d.path(), "b.ova", "ustar", &["vm.ovf", "child.qcow2", "src.raw"]);
    assert!(raw.exists());
    let ova = OvaArchive::open(&ova_path).unwrap();
    let loc = ova.resolve("child.qcow2", false).unwrap();
    let r = open_location(&loc, &OpenOptions::default(), None);
    assert!(matches!(r.map(|_| ()), Err(Error::Denied(_))));
}
