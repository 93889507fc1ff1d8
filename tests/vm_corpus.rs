//! Opt-in golden tests on real-world OVF descriptors (the COT project's test
//! OVFs). Run with `V2X_CORPUS=/path/to/corpus cargo test --test vm_corpus`;
//! without V2X_CORPUS the test does nothing, and with it every listed file must
//! exist. Only our output is kept, in `testdata/golden/vm/corpus/`; the corpus
//! paths are shown as `$CORPUS`.

mod common;

use std::path::Path;

/// Corpus OVFs (relative to V2X_CORPUS) and what each exercises.
const OVFS: &[(&str, &str)] = &[
    (
        "images/cot/vmware.ovf",
        "VMware export, default namespace envelope/1, firmware bios",
    ),
    (
        "images/cot/input.ovf",
        "OVF 1.x, three configurations, ISO and text files",
    ),
    ("images/cot/minimal.ovf", "smallest valid envelope"),
    (
        "images/cot/ubuntu.2.0.ovf",
        "VirtualBox OVF 2.0 with StorageItem/EthernetPortItem",
    ),
    (
        "images/cot/v0.9.ovf",
        "VMware pre-DMTF 0.9 namespace, Section xsi:type",
    ),
    ("images/cot/csr1000v.ovf", "Cisco CSR1000v, four configurations"),
    ("images/cot/csr1000v_2017.ovf", "newer CSR1000v"),
    ("images/cot/iosv.ovf", "Cisco IOSv, a blank disk without fileRef"),
    ("images/cot/invalid.ovf", "deliberately broken: must fail"),
    (
        "images/cot/ersatz_ovf_3.0.ovf",
        "unknown envelope/3: must be unsupported",
    ),
];

#[test]
fn corpus_ovfs_match_goldens() {
    let Some(corpus) = std::env::var_os("V2X_CORPUS") else {
        eprintln!("V2X_CORPUS not set: corpus OVF goldens not checked");
        return;
    };
    let corpus = Path::new(&corpus);
    let prefix = corpus.display().to_string();
    let prefix = prefix.trim_end_matches('/');
    let golden = Path::new("testdata/golden/vm/corpus");
    for (rel, why) in OVFS {
        let p = corpus.join(rel);
        assert!(p.is_file(), "{} ({why}) is missing from V2X_CORPUS", p.display());
        let name = Path::new(rel).file_stem().unwrap().to_str().unwrap();
        common::check_vm_golden(golden, name, v2x::vm::ovf::load(&p), prefix, "$CORPUS");
    }
    // The two negative fixtures must fail with the documented kinds.
    let kind = |rel: &str| v2x::vm::ovf::load(&corpus.join(rel)).unwrap_err().kind_name();
    assert_eq!(kind("images/cot/invalid.ovf"), "corrupt");
    assert_eq!(kind("images/cot/ersatz_ovf_3.0.ovf"), "unsupported");
}
