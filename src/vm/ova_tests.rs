//! Unit tests of OVA walking, href resolution and manifest checks, on tars
//! built byte by byte. None needs the OVF parser.

use super::*;
use crate::vm::manifest::verify;
use crate::vm::tar::build::*;
use sha1::Sha1;
use sha2::{Digest, Sha256};

const OVF: &[u8] = b"<?xml version=\"1.0\"?><Envelope><References>\
<File ovf:href=\"disk1.vmdk\" ovf:id=\"file1\"/></References></Envelope>";

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// vm.ovf, vm.mf (from `mf`), disk1.vmdk, notes.txt, written to a temp file.
fn ova_with(mf: impl Fn(&str) -> String) -> tempfile::NamedTempFile {
    let disk: Vec<u8> = (0..5000u32).map(|i| (i % 256) as u8).collect();
    let base = format!(
        "SHA1(vm.ovf)= {}\nSHA256 (disk1.vmdk) = {}\n",
        hex(&Sha1::digest(OVF)),
        hex(&Sha256::digest(&disk))
    );
    let mut t = Vec::new();
    member(&mut t, "vm.ovf", OVF);
    member(&mut t, "vm.mf", mf(&base).as_bytes());
    member(&mut t, "disk1.vmdk", &disk);
    member(&mut t, "notes.txt", b"hello");
    finish(&mut t);
    let mut f = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut f, &t).unwrap();
    f
}

fn entries_of(ova: &OvaArchive) -> Vec<ManifestEntry> {
    let ovf = ova.ovf_member(&mut Vec::new()).unwrap();
    let mf = ova.manifest_member(ovf).unwrap().unwrap();
    manifest::parse(&ova.read_text(mf, "manifest").unwrap()).unwrap()
}

#[test]
fn resolve_maps_hrefs_to_members() {
    let f = ova_with(|b| b.to_string());
    let ova = OvaArchive::open(f.path()).unwrap();
    let mut notes = Vec::new();
    assert_eq!(ova.ovf_member(&mut notes).unwrap().name, "vm.ovf");
    assert!(notes.is_empty());
    let loc = ova.resolve("disk1.vmdk", true).unwrap();
    let DiskLocation::Member {
        tar,
        member,
        offset,
        len,
        gzip,
    } = loc
    else {
        panic!("{loc:?}")
    };
    assert_eq!(
        (tar.as_path(), member.as_str(), len, gzip),
        (f.path(), "disk1.vmdk", 5000, true)
    );
    assert_eq!(offset, 512 + 512 + 512 + 512 + 512); // three headers, ovf and mf data
    let e = ova.resolve("disk2.vmdk", false).unwrap_err();
    assert!(
        matches!(e, Error::NotFound(_)) && e.to_string().contains("disk2.vmdk"),
        "{e}"
    );
    assert!(matches!(
        ova.resolve("../disk1.vmdk", false),
        Err(Error::Denied(_))
    ));
    assert!(matches!(ova.resolve("/disk1.vmdk", false), Err(Error::Denied(_))));
    assert!(matches!(
        ova.resolve("http://x/disk1.vmdk", false),
        Err(Error::Unsupported(_))
    ));
    assert!(matches!(
        ova.resolve("./disk1.vmdk", false),
        Ok(DiskLocation::Member { len: 5000, .. })
    ));
    // Exact match only.
    assert!(matches!(
        ova.resolve("DISK1.vmdk", false),
        Err(Error::NotFound(_))
    ));
}

#[test]
fn good_manifest_verifies() {
    let f = ova_with(|b| b.to_string());
    let ova = OvaArchive::open(f.path()).unwrap();
    let entries = entries_of(&ova);
    verify(f.path(), &ova.members, &entries).unwrap();
    let notes = unlisted_notes("vm.ovf", &["disk1.vmdk".into()], &entries);
    assert!(notes.is_empty(), "{notes:?}");
    // Manifests may name members "./name", as tar lists them.
    let dotted: Vec<ManifestEntry> = entries
        .iter()
        .map(|e| ManifestEntry {
            name: format!("./{}", e.name),
            ..e.clone()
        })
        .collect();
    verify(f.path(), &ova.members, &dotted).unwrap();
}

#[test]
fn one_flipped_digit_fails_naming_both_digests() {
    let f = ova_with(|b| {
        let i = b.find("disk1.vmdk) = ").unwrap() + "disk1.vmdk) = ".len();
        let mut s = b.to_string();
        let flipped = if &b[i..i + 1] == "0" { "1" } else { "0" };
        s.replace_range(i..i + 1, flipped);
        s
    });
    let ova = OvaArchive::open(f.path()).unwrap();
    let entries = entries_of(&ova);
    let e = verify(f.path(), &ova.members, &entries).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert!(
        msg.contains("!disk1.vmdk") && msg.contains(&entries[1].digest),
        "{msg}"
    );
    // load fails before the OVF is parsed.
    let e = load(f.path(), true).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
}

#[test]
fn listed_member_missing_is_an_error() {
    let f = ova_with(|b| format!("{b}SHA1(disk2.vmdk)= {}\n", "0".repeat(40)));
    let ova = OvaArchive::open(f.path()).unwrap();
    let e = verify(f.path(), &ova.members, &entries_of(&ova)).unwrap_err();
    assert!(
        matches!(e, Error::NotFound(_)) && e.to_string().contains("disk2.vmdk"),
        "{e}"
    );
}

#[test]
fn unlisted_members_get_notes() {
    let f = ova_with(|b| b.lines().next().unwrap().to_string() + "\n");
    let ova = OvaArchive::open(f.path()).unwrap();
    let entries = entries_of(&ova);
    verify(f.path(), &ova.members, &entries).unwrap();
    let notes = unlisted_notes("vm.ovf", &["disk1.vmdk".into()], &entries);
    assert_eq!(notes.len(), 1);
    assert!(notes[0].contains("disk1.vmdk"), "{notes:?}");
}

fn write_tar(t: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut f, t).unwrap();
    f
}

#[test]
fn escaping_member_is_denied_by_load() {
    let mut t = Vec::new();
    member(&mut t, "vm.ovf", OVF);
    member(&mut t, "../evil", b"x");
    finish(&mut t);
    let f = write_tar(&t);
    for verify in [true, false] {
        let e = load(f.path(), verify).unwrap_err();
        assert!(
            matches!(e, Error::Denied(_)) && e.to_string().contains("../evil"),
            "{e}"
        );
    }
}

#[test]
fn ovf_member_rules() {
    let mut t = Vec::new();
    member(&mut t, "disk1.vmdk", b"x");
    finish(&mut t);
    let e = load(write_tar(&t).path(), false).unwrap_err();
    assert!(matches!(e, Error::NotFound(_)), "{e}");

    let mut t = Vec::new();
    member(&mut t, "a.ovf", OVF);
    member(&mut t, "b.OVF", OVF);
    finish(&mut t);
    let e = load(write_tar(&t).path(), false).unwrap_err();
    assert!(
        matches!(e, Error::Corrupt { .. }) && e.to_string().contains("b.OVF"),
        "{e}"
    );

    let mut t = Vec::new();
    member(&mut t, "x.mf", b"");
    member(&mut t, "a.ovf", OVF);
    member(&mut t, "a.mf", b"");
    member(&mut t, "b.mf", b"");
    finish(&mut t);
    let f = write_tar(&t);
    let ova = OvaArchive::open(f.path()).unwrap();
    let mut notes = Vec::new();
    let ovf = ova.ovf_member(&mut notes).unwrap();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(ova.manifest_member(ovf).unwrap().unwrap().name, "a.mf");
}

#[test]
fn several_unnamed_manifests_are_corrupt() {
    let mut t = Vec::new();
    member(&mut t, "a.ovf", OVF);
    member(&mut t, "x.mf", b"");
    member(&mut t, "y.mf", b"");
    finish(&mut t);
    let f = write_tar(&t);
    let ova = OvaArchive::open(f.path()).unwrap();
    let ovf = ova.ovf_member(&mut Vec::new()).unwrap();
    assert!(matches!(ova.manifest_member(ovf), Err(Error::Corrupt { .. })));
}

#[test]
fn descriptor_size_is_capped() {
    let mut t = header(b"a.ovf", b'0', MAX_DESCRIPTOR_BYTES + 1, None);
    t.resize(t.len() + MAX_DESCRIPTOR_BYTES as usize + 512, b' ');
    let f = write_tar(&t);
    let e = load(f.path(), false).unwrap_err();
    assert!(
        matches!(
            e,
            Error::LimitExceeded {
                what: "OVF descriptor",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn fuzz_entry_survives_odd_inputs() {
    let f = ova_with(|b| b.to_string());
    let bytes = std::fs::read(f.path()).unwrap();
    fuzz(&bytes);
    for cut in [0, 100, 511, 512, 1000, 2047] {
        fuzz(&bytes[..cut]);
    }
}
