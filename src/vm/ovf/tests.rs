//! Hostile and mutated OVF inputs: each asserts the exact error kind.

use super::*;
use std::path::PathBuf;

/// A small valid OVF 1.x envelope; `{disk}` and `{hw}` are replaced by tests.
const BASE: &str = r#"<?xml version="1.0"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">
  <References><File ovf:id="f1" ovf:href="{href}"/></References>
  <DiskSection><Info/>{disk}</DiskSection>
  <VirtualSystem ovf:id="vm1">
    <Info/>
    <VirtualHardwareSection><Info/>{hw}</VirtualHardwareSection>
  </VirtualSystem>
</Envelope>"#;

const DISK: &str =
    r#"<Disk ovf:diskId="d1" ovf:fileRef="f1" ovf:capacity="1" ovf:capacityAllocationUnits="byte * 2^30"/>"#;
const HW: &str = r#"<Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
<Item><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:VirtualQuantity>512</rasd:VirtualQuantity></Item>
<Item><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceType>17</rasd:ResourceType><rasd:HostResource>ovf:/disk/d1</rasd:HostResource></Item>"#;

fn ovf(href: &str, disk: &str, hw: &str) -> String {
    BASE.replace("{href}", href)
        .replace("{disk}", disk)
        .replace("{hw}", hw)
}

fn run(xml: &str) -> Result<VmSpec> {
    parse(xml, Path::new("t.ovf"), &mut |href, _| {
        Ok(DiskLocation::File {
            path: contained_path(href)?,
        })
    })
}

fn kind(xml: &str) -> &'static str {
    match run(xml) {
        Ok(_) => "ok",
        Err(e) => e.kind_name(),
    }
}

#[test]
fn base_parses() {
    let s = run(&ovf("a.vmdk", DISK, HW)).unwrap();
    assert_eq!((s.vcpus, s.memory_mib, s.disks.len()), (2, 512, 1));
    assert_eq!(s.disks[0].capacity, Some(1 << 30));
    assert_eq!(s.name, "vm1");
}

#[test]
fn dtd_and_entity_expansion_refused() {
    let bomb = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1">&lol2;</Envelope>"#;
    assert_eq!(kind(bomb), "unsupported");
    let external = r#"<?xml version="1.0"?>
<!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1">&x;</Envelope>"#;
    assert_eq!(kind(external), "unsupported");
}

#[test]
fn node_cap() {
    let many = "<x/>".repeat(MAX_OVF_NODES as usize + 1);
    let e = run(&ovf("a.vmdk", DISK, &many)).unwrap_err();
    assert!(
        matches!(
            e,
            Error::LimitExceeded {
                what: "OVF XML nodes",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn item_cap() {
    let many = "<Item/>".repeat(MAX_OVF_ENTRIES + 1);
    assert_eq!(kind(&ovf("a.vmdk", DISK, &many)), "limit-exceeded");
}

#[test]
fn capacity_overflow_and_garbage() {
    let huge = DISK.replace(r#"ovf:capacity="1""#, r#"ovf:capacity="18446744073709551615""#);
    let e = run(&ovf("a.vmdk", &huge, HW)).unwrap_err();
    assert!(
        matches!(e, Error::Corrupt { .. }) && e.to_string().contains("overflows"),
        "{e}"
    );
    let big_exp = DISK.replace("2^30", "2^64");
    assert_eq!(kind(&ovf("a.vmdk", &big_exp, HW)), "corrupt");
    for bad in ["-1", "1.5", "0x10", "", " 1 2", "99999999999999999999999"] {
        let d = DISK.replace(r#"ovf:capacity="1""#, &format!(r#"ovf:capacity="{bad}""#));
        assert_eq!(kind(&ovf("a.vmdk", &d, HW)), "corrupt", "capacity {bad:?}");
    }
    let unit = DISK.replace("byte * 2^30", "furlongs");
    assert_eq!(kind(&ovf("a.vmdk", &unit, HW)), "unsupported");
}

#[test]
fn negative_and_garbage_quantities() {
    for bad in ["-2", "two", "4294967296000"] {
        let hw = HW.replace(
            "<rasd:VirtualQuantity>2<",
            &format!("<rasd:VirtualQuantity>{bad}<"),
        );
        let k = kind(&ovf("a.vmdk", DISK, &hw));
        assert!(k == "corrupt" || k == "limit-exceeded", "vcpus {bad:?}: {k}");
    }
    let zero = HW.replace("<rasd:VirtualQuantity>2<", "<rasd:VirtualQuantity>0<");
    assert_eq!(kind(&ovf("a.vmdk", DISK, &zero)), "corrupt");
    let mem = HW.replace("512", "99999999999999999");
    assert_eq!(kind(&ovf("a.vmdk", DISK, &mem)), "corrupt");
    let mem = HW.replace("512", "16777217");
    assert_eq!(kind(&ovf("a.vmdk", DISK, &mem)), "limit-exceeded");
    let rt = HW.replace("<rasd:ResourceType>3<", "<rasd:ResourceType>x<");
    assert_eq!(kind(&ovf("a.vmdk", DISK, &rt)), "corrupt");
}

#[test]
fn vcpu_and_nic_and_disk_caps() {
    let hw = HW.replace(
        "<rasd:VirtualQuantity>2<",
        &format!("<rasd:VirtualQuantity>{}<", MAX_VCPUS + 1),
    );
    assert_eq!(kind(&ovf("a.vmdk", DISK, &hw)), "limit-exceeded");
    let nic = "<Item><rasd:ResourceType>10</rasd:ResourceType></Item>";
    assert_eq!(kind(&ovf("a.vmdk", DISK, &nic.repeat(MAX_NICS))), "ok");
    assert_eq!(
        kind(&ovf("a.vmdk", DISK, &nic.repeat(MAX_NICS + 1))),
        "limit-exceeded"
    );
    let disks: String = (0..=MAX_DISKS)
        .map(|i| format!(r#"<Disk ovf:diskId="b{i}" ovf:capacity="1"/>"#))
        .collect();
    assert_eq!(kind(&ovf("a.vmdk", &disks, HW)), "limit-exceeded");
}

#[test]
fn bad_mac_is_corrupt() {
    let nic = "<Item><rasd:ResourceType>10</rasd:ResourceType><rasd:Address>00:50:56:zz:00:01</rasd:Address></Item>";
    assert_eq!(kind(&ovf("a.vmdk", DISK, nic)), "corrupt");
    let nic = "<Item><rasd:ResourceType>10</rasd:ResourceType><rasd:Address>00-50-56-AA-00-01</rasd:Address></Item>";
    let s = run(&ovf("a.vmdk", DISK, nic)).unwrap();
    assert_eq!(s.nics[0].mac.as_deref(), Some("00:50:56:aa:00:01"));
}

#[test]
fn href_escapes_refused() {
    for href in [
        "../etc/passwd",
        "/etc/passwd",
        "a/../../b.vmdk",
        "http://example.invalid/a.vmdk",
        "file:///a",
        "C:\\a.vmdk",
        "..\\a.vmdk",
    ] {
        assert_eq!(kind(&ovf(href, DISK, HW)), "denied", "{href}");
    }
    assert_eq!(
        contained_path("sub/./a.vmdk").unwrap(),
        PathBuf::from("sub/a.vmdk")
    );
    assert_eq!(percent_decode("%2e%2e/x").unwrap(), "../x");
    assert!(matches!(
        contained_path(&percent_decode("%2e%2e/x").unwrap()),
        Err(Error::Denied(_))
    ));
    assert!(percent_decode("a%zz").is_err());
}

#[test]
fn broken_references_are_corrupt() {
    let hw = HW.replace("ovf:/disk/d1", "ovf:/disk/nope");
    assert_eq!(kind(&ovf("a.vmdk", DISK, &hw)), "corrupt");
    let hw = HW.replace("ovf:/disk/d1", "nonexistent.vmdk");
    assert_eq!(kind(&ovf("a.vmdk", DISK, &hw)), "corrupt");
    let d = DISK.replace(r#"ovf:fileRef="f1""#, r#"ovf:fileRef="f9""#);
    assert_eq!(kind(&ovf("a.vmdk", &d, HW)), "corrupt");
    assert_eq!(kind("<Envelope"), "corrupt");
    assert_eq!(kind("<Other/>"), "corrupt");
    assert_eq!(
        kind(r#"<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/3"/>"#),
        "unsupported"
    );
    assert_eq!(
        kind(r#"<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"/>"#),
        "corrupt"
    );
}

#[test]
fn chunked_and_gzip_files() {
    let x = ovf("a.vmdk", DISK, HW).replace(
        r#"ovf:href="a.vmdk""#,
        r#"ovf:href="a.vmdk" ovf:chunkSize="1000""#,
    );
    assert_eq!(kind(&x), "unsupported");
    let x = ovf("a.vmdk", DISK, HW).replace(
        r#"ovf:href="a.vmdk""#,
        r#"ovf:href="a.vmdk" ovf:compression="gzip""#,
    );
    let mut saw_gzip = false;
    parse(&x, Path::new("t.ovf"), &mut |_, gz| {
        saw_gzip = gz;
        Ok(DiskLocation::Blank)
    })
    .unwrap();
    assert!(saw_gzip);
}

#[test]
fn units() {
    assert_eq!(unit_bytes("byte * 2^20").unwrap(), 1 << 20);
    assert_eq!(unit_bytes("byte*10^9").unwrap(), 1_000_000_000);
    assert_eq!(unit_bytes("MegaBytes").unwrap(), 1 << 20);
    assert_eq!(unit_bytes("byte * 2^10 * 4").unwrap(), 4096);
    assert!(unit_bytes("byte * 2^99").is_err());
    assert!(unit_bytes("byte * 0").is_err());
    assert_eq!(
        format_hint("http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"),
        "vmdk-streamOptimized"
    );
    assert_eq!(
        format_hint("http://www.gnome.org/~markmc/qcow-image-format.html"),
        "qcow2"
    );
}

#[test]
fn offsets_from_positions() {
    assert_eq!(byte_offset("ab\ncd\nef", 2, 2), 4);
    assert_eq!(byte_offset("ab", 9, 9), 2);
}

#[test]
fn configurations_and_bounds() {
    let hw = r#"<Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>1</rasd:VirtualQuantity></Item>
<Item ovf:configuration="big other"><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>8</rasd:VirtualQuantity></Item>
<Item ovf:bound="max"><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>9999</rasd:VirtualQuantity></Item>
<Item><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>256</rasd:VirtualQuantity></Item>
<Item ovf:bound="min"><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>1</rasd:VirtualQuantity></Item>"#;
    let opts = r#"<DeploymentOptionSection><Configuration ovf:id="small"/><Configuration ovf:id="big" ovf:default="true"/></DeploymentOptionSection>
  <VirtualSystem"#;
    let x = ovf("a.vmdk", DISK, hw).replacen("<VirtualSystem", opts, 1);
    let s = run(&x).unwrap();
    assert_eq!((s.vcpus, s.memory_mib), (8, 256));
    assert!(s.notes[0].contains("using 'big'"), "{:?}", s.notes);
    let x = x.replace(r#" ovf:default="true""#, "");
    assert_eq!(run(&x).unwrap().vcpus, 1);
}
