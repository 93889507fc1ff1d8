//! Unit tests of the tar walk, on archives built byte by byte.

use super::build::*;
use super::*;

fn walk_bytes(tar: Vec<u8>) -> Result<Vec<TarMember>> {
    walk(&HostFile::from_bytes("t.ova", tar))
}

fn names(m: &[TarMember]) -> Vec<(&str, MemberKind, u64, u64)> {
    m.iter()
        .map(|m| (m.name.as_str(), m.kind, m.offset, m.len))
        .collect()
}

#[test]
fn ustar_members_and_offsets() {
    let mut t = Vec::new();
    member(&mut t, "vm.ovf", b"<Envelope/>");
    member(&mut t, "./disk1.vmdk", &[7u8; 1000]);
    t.extend(header(b"dir/", b'5', 0, None));
    t.extend(header(b"link", b'2', 0, None));
    finish(&mut t);
    let m = walk_bytes(t).unwrap();
    assert_eq!(
        names(&m),
        vec![
            ("vm.ovf", MemberKind::File, 512, 11),
            ("disk1.vmdk", MemberKind::File, 1536, 1000),
            ("dir", MemberKind::Dir, 3072, 0),
            ("link", MemberKind::Link, 3584, 0),
        ]
    );
}

#[test]
fn end_without_zero_blocks_is_accepted() {
    let mut t = Vec::new();
    member(&mut t, "a", b"x");
    assert_eq!(walk_bytes(t).unwrap().len(), 1);
}

#[test]
fn zero_block_then_header_is_corrupt() {
    let mut t = vec![0u8; 512];
    member(&mut t, "a", b"x");
    assert!(matches!(walk_bytes(t), Err(Error::Corrupt { .. })));
}

#[test]
fn checksum_is_verified() {
    let mut t = Vec::new();
    member(&mut t, "a", b"x");
    t[0] = b'b'; // name changed, checksum not
    let e = walk_bytes(t).unwrap_err();
    assert!(matches!(e, Error::Corrupt { offset: 0, .. }), "{e}");
    assert!(e.to_string().contains("checksum"), "{e}");
}

#[test]
fn size_past_the_end_is_corrupt() {
    let mut t = header(b"a", b'0', 4096, None);
    t.extend(vec![0u8; 1024]);
    let e = walk_bytes(t).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
}

#[test]
fn base256_size() {
    // 0x80 marker, then big-endian 1000.
    let mut f = [0u8; 12];
    f[0] = 0x80;
    f[10] = 0x03;
    f[11] = 0xe8;
    let mut t = header(b"big", b'0', 0, Some(f));
    t.extend(vec![1u8; 1000]);
    pad(&mut t);
    finish(&mut t);
    assert_eq!(
        names(&walk_bytes(t).unwrap()),
        vec![("big", MemberKind::File, 512, 1000)]
    );
    // A huge base-256 size is refused against the file length, never allocated.
    let mut f = [0xffu8; 12];
    f[0] = 0x80;
    assert!(matches!(
        walk_bytes(header(b"x", b'0', 0, Some(f))),
        Err(Error::Corrupt { .. })
    ));
    f[0] = 0xff;
    assert!(matches!(
        walk_bytes(header(b"x", b'0', 0, Some(f))),
        Err(Error::Corrupt { .. })
    ));
}

#[test]
fn bad_octal_is_corrupt() {
    let t = header(b"x", b'0', 0, Some(*b"0000000009\0\0"));
    assert!(matches!(walk_bytes(t), Err(Error::Corrupt { .. })));
}

#[test]
fn ustar_prefix_joins_the_name() {
    let mut h = header(b"disk.vmdk", b'0', 1, None);
    h[345..349].copy_from_slice(b"sub1");
    seal(&mut h);
    h.extend(vec![0u8; 512]);
    assert_eq!(walk_bytes(h).unwrap()[0].name, "sub1/disk.vmdk");
}

#[test]
fn gnu_long_name() {
    let long = "d/".repeat(80) + "disk.vmdk";
    let mut t = Vec::new();
    t.extend(header(b"././@LongLink", b'L', long.len() as u64 + 1, None));
    t.extend_from_slice(long.as_bytes());
    t.push(0);
    pad(&mut t);
    member(&mut t, "short-truncated", b"abc");
    finish(&mut t);
    let m = walk_bytes(t).unwrap();
    assert_eq!(names(&m), vec![(long.as_str(), MemberKind::File, 1536, 3)]);
    assert_eq!(m[0].header_offset, 0);
}

#[test]
fn pax_path_and_size() {
    let body =
        pax_record("path", "long/ish/name.vmdk") + &pax_record("size", "5") + &pax_record("mtime", "1.5");
    let mut t = header(b"PaxHeaders/x", b'x', body.len() as u64, None);
    t.extend_from_slice(body.as_bytes());
    pad(&mut t);
    t.extend(header(b"name.vmdk", b'0', 0, None)); // size 0 in ustar, 5 in pax
    t.extend_from_slice(b"hello");
    pad(&mut t);
    member(&mut t, "after", b"z");
    finish(&mut t);
    let m = walk_bytes(t).unwrap();
    assert_eq!(
        names(&m),
        vec![
            ("long/ish/name.vmdk", MemberKind::File, 1536, 5),
            ("after", MemberKind::File, 2560, 1)
        ]
    );
}

#[test]
fn bad_pax_records_are_corrupt() {
    for body in [
        "5 a=b\n",
        "x path=a\n",
        "99 path=a\n",
        "9 patha\n\n",
        "11 size=1x\n",
    ] {
        let mut t = header(b"p", b'x', body.len() as u64, None);
        t.extend_from_slice(body.as_bytes());
        pad(&mut t);
        member(&mut t, "a", b"");
        let r = walk_bytes(t);
        assert!(matches!(r, Err(Error::Corrupt { .. })), "{body:?}: {r:?}");
    }
}

#[test]
fn pax_header_is_capped() {
    let t = header(b"p", b'x', MAX_PAX_HEADER_BYTES + 1, None);
    let mut t2 = t.clone();
    t2.resize(t.len() + MAX_PAX_HEADER_BYTES as usize + 1024, 0);
    assert!(matches!(
        walk_bytes(t2),
        Err(Error::LimitExceeded {
            what: "pax header size",
            ..
        })
    ));
}

#[test]
fn long_name_is_capped() {
    let mut t = header(b"L", b'L', MAX_MEMBER_NAME as u64 + 1, None);
    t.resize(t.len() + MAX_MEMBER_NAME + 1024, b'a');
    assert!(matches!(
        walk_bytes(t),
        Err(Error::LimitExceeded {
            what: "tar member name length",
            ..
        })
    ));
}

#[test]
fn metadata_headers_in_a_row_are_capped() {
    let mut t = Vec::new();
    for _ in 0..=MAX_META_HEADERS {
        t.extend(header(b"g", b'g', 0, None));
    }
    assert!(matches!(walk_bytes(t), Err(Error::LimitExceeded { .. })));
    // A trailing metadata header with no member is corrupt.
    let t = header(b"g", b'g', 0, None);
    assert!(matches!(walk_bytes(t), Err(Error::Corrupt { .. })));
}

#[test]
fn member_count_is_capped() {
    let mut t = Vec::with_capacity((MAX_TAR_MEMBERS + 1) * 512);
    let h = header(b"d/", b'5', 0, None);
    for _ in 0..=MAX_TAR_MEMBERS {
        t.extend_from_slice(&h);
    }
    let e = walk_bytes(t).unwrap_err();
    assert!(
        matches!(
            e,
            Error::LimitExceeded {
                what: "tar members",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn escaping_names_are_denied_for_any_member() {
    for (name, kind) in [
        ("../evil", b'0'),
        ("a/../../evil", b'0'),
        ("/etc/passwd", b'0'),
        ("..", b'5'),
        ("x/..\\..\\y", b'2'),
        ("C:\\evil", b'0'),
    ] {
        let mut t = Vec::new();
        member(&mut t, "vm.ovf", b"");
        t.extend(header(name.as_bytes(), kind, 0, None));
        finish(&mut t);
        let e = walk_bytes(t).unwrap_err();
        assert!(matches!(e, Error::Denied(_)), "{name}: {e}");
        assert!(e.to_string().contains(&name.escape_debug().to_string()), "{e}");
    }
    // Via pax and GNU long names too.
    let body = pax_record("path", "../evil");
    let mut t = header(b"p", b'x', body.len() as u64, None);
    t.extend_from_slice(body.as_bytes());
    pad(&mut t);
    member(&mut t, "fine", b"");
    assert!(matches!(walk_bytes(t), Err(Error::Denied(_))));
    // Dots inside names are fine.
    assert_eq!(clean_name("a..b/..c", 0).unwrap(), "a..b/..c");
}

#[test]
fn devices_and_sparse_are_other() {
    let body = pax_record("GNU.sparse.major", "1");
    let mut t = header(b"p", b'x', body.len() as u64, None);
    t.extend_from_slice(body.as_bytes());
    pad(&mut t);
    member(&mut t, "sparse", b"abc");
    t.extend(header(b"dev", b'3', 0, None));
    finish(&mut t);
    let m = walk_bytes(t).unwrap();
    assert_eq!(m[0].kind, MemberKind::Other);
    assert_eq!(m[0].len, 0);
    assert_eq!(m[1].kind, MemberKind::Other);
}
