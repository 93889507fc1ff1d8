//! Opt-in check of OVA reading against the real OVAs of the corpus
//! (`V2X_CORPUS=/path/to/shared/corpus cargo test --test ova_corpus`).
//! When V2X_CORPUS is set, a missing corpus or OVA fails the test.
//!
//! For each `images/*.ova` row of MANIFEST.tsv and its `ova!member` rows:
//! the archive's sha256, each member's data offset (the row's "offset N in
//! tar" note), the archive's own `.mf` digests, and every disk member
//! opened in place and read in full against `raw_sha256_qemu`.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;
use v2x::vm::open::open_location;
use v2x::vm::ova::{self, OvaArchive};
use v2x::vm::{manifest, DiskLocation};
use v2x_formats::block::BlockSource;
use v2x_formats::OpenOptions;

/// The N of "offset N in tar" in a member row's notes.
fn noted_offset(notes: &str) -> Option<u64> {
    let rest = &notes[notes.find("offset ")? + "offset ".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

#[test]
fn corpus_ovas_read_in_place() {
    let Some(dir) = std::env::var_os("V2X_CORPUS") else {
        eprintln!("V2X_CORPUS not set: OVA corpus check not requested");
        return;
    };
    let corpus = PathBuf::from(dir);
    let text = std::fs::read_to_string(corpus.join("MANIFEST.tsv"))
        .unwrap_or_else(|e| panic!("V2X_CORPUS={} has no MANIFEST.tsv: {e}", corpus.display()));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let rows: Vec<HashMap<&str, &str>> = lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| header.iter().copied().zip(l.split('\t')).collect())
        .collect();
    let ovas: Vec<&HashMap<&str, &str>> = rows.iter().filter(|r| r["filename"].ends_with(".ova")).collect();
    assert!(!ovas.is_empty(), "MANIFEST.tsv lists no OVA");
    let mut checked_members = 0;
    for row in ovas {
        let name = row["filename"];
        let path = corpus.join(name);
        assert!(
            path.is_file(),
            "{name} is listed in MANIFEST.tsv but missing from the corpus"
        );
        assert_eq!(
            common::sha256_file(&path),
            row["sha256"],
            "{name}: archive sha256"
        );
        let archive = OvaArchive::open(&path).unwrap_or_else(|e| panic!("{name}: {e}"));

        // The archive's own manifest.
        let ovf = archive.ovf_member(&mut Vec::new()).unwrap();
        let mf = archive
            .manifest_member(ovf)
            .unwrap()
            .unwrap_or_else(|| panic!("{name}: no .mf"));
        let entries = manifest::parse(&archive.read_text(mf, "manifest").unwrap()).unwrap();
        assert!(!entries.is_empty(), "{name}: empty manifest");
        let start = Instant::now();
        manifest::verify(&path, &archive.members, &entries).unwrap_or_else(|e| panic!("{name}: {e}"));
        eprintln!(
            "{name}: {} manifest entries verified in {:?}",
            entries.len(),
            start.elapsed()
        );

        // Every member row: offset, then contents in place.
        let prefix = format!("{name}!");
        for mrow in rows.iter().filter(|r| r["filename"].starts_with(&prefix)) {
            let member = &mrow["filename"][prefix.len()..];
            let want_offset = noted_offset(mrow["notes"])
                .unwrap_or_else(|| panic!("{}: no 'offset N' in notes", mrow["filename"]));
            let loc = archive
                .resolve(member, false)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let DiskLocation::Member { offset, len, .. } = &loc else {
                panic!("{loc:?}")
            };
            assert_eq!(*offset, want_offset, "{name}!{member}: data offset");
            assert_eq!(len.to_string(), mrow["file_size"], "{name}!{member}: length");
            let img = open_location(&loc, &OpenOptions::default(), None)
                .unwrap_or_else(|e| panic!("{name}!{member}: {e}"));
            assert_eq!(
                img.size().to_string(),
                mrow["virtual_size"],
                "{name}!{member}: size"
            );
            let start = Instant::now();
            let got = common::image_sha256(img.as_ref());
            eprintln!(
                "{name}!{member}: {} bytes read in {:?}",
                img.size(),
                start.elapsed()
            );
            assert_eq!(got, mrow["raw_sha256_qemu"], "{name}!{member}: raw sha256");
            checked_members += 1;
        }

        // The whole load path: manifest checked, OVF parsed, disks found.
        let spec = ova::load(&path, true).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!spec.disks.is_empty(), "{name}: no disks");
    }
    assert!(checked_members > 0, "MANIFEST.tsv lists no OVA member rows");
}
