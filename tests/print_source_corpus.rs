//! Opt-in golden tests of `v2x convert --print-source` (text and `--json`)
//! on the real-world OVAs and OVFs of the shared corpus (VMware, VirtualBox
//! OVF 2.0, OVF 1.x with a SHA1 manifest, Cisco appliances, broken ones).
//! Runs only when `V2X_CORPUS` names the corpus directory; then a missing file
//! fails. Goldens live in `testdata/golden/vm/print-source/`, with the corpus
//! path written as `$CORPUS`; `V2X_UPDATE_GOLDEN=1` rewrites them.

mod common;

use std::path::{Path, PathBuf};

/// Corpus files (relative to the corpus) whose description v2x must print.
const SOURCES: &[&str] = &[
    "images/cot/cot-input-repacked.ova",
    "images/cot/cot-ubuntu.2.0-repacked.ova",
    "images/cot/input.ovf",
    "images/cot/ubuntu.2.0.ovf",
    "images/cot/vmware.ovf",
    "images/cot/csr1000v.ovf",
    "images/cot/iosv.ovf",
    "images/cot/minimal.ovf",
];

/// Corpus files v2x must refuse, with the exit status it must give.
const REFUSED: &[(&str, i32)] = &[("images/cot/ersatz_ovf_3.0.ovf", 5)];

fn corpus() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("V2X_CORPUS")?);
    assert!(
        dir.join("MANIFEST.tsv").is_file(),
        "V2X_CORPUS={} holds no MANIFEST.tsv",
        dir.display()
    );
    Some(dir)
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/golden/vm/print-source")
}

#[test]
fn corpus_descriptions_print_as_their_goldens() {
    let Some(corpus) = corpus() else { return };
    let root = corpus.canonicalize().unwrap();
    for rel in SOURCES {
        let src = root.join(rel);
        assert!(src.is_file(), "corpus file {} is missing", src.display());
        let stem = Path::new(rel).file_name().unwrap().to_string_lossy().into_owned();
        for (ext, extra) in [("txt", None), ("json", Some("--json"))] {
            let mut args = vec!["convert", "--print-source", src.to_str().unwrap()];
            args.extend(extra);
            let out = common::v2x_ok(&args);
            let text = String::from_utf8(out.stdout)
                .unwrap()
                .replace(root.to_str().unwrap(), "$CORPUS");
            common::assert_golden(&golden_dir().join(format!("{stem}.{ext}")), &text);
        }
    }
}

#[test]
fn corpus_descriptions_v2x_cannot_read_are_refused() {
    let Some(corpus) = corpus() else { return };
    for (rel, code) in REFUSED {
        let src = corpus.join(rel);
        assert!(src.is_file(), "corpus file {} is missing", src.display());
        let out = common::run_v2x(&["convert", "--print-source", src.to_str().unwrap()]);
        assert_eq!(
            out.status.code(),
            Some(*code),
            "{rel}: {}",
            common::output_text(&out)
        );
    }
}

#[test]
fn corpus_ova_manifests_verify_and_disks_open_in_place() {
    let Some(corpus) = corpus() else { return };
    let dir = common::scratch("corpus-ova");
    // The COT OVA's disk is 1 GiB with little data: convert it whole, with
    // its SHA1 manifest checked, and compare with qemu-img's reading of the
    // same VMDK outside the tar.
    let ova = corpus.join("images/cot/cot-input-repacked.ova");
    let out = dir.path().join("out");
    let o = common::v2x_ok(&[
        "convert",
        ova.to_str().unwrap(),
        out.to_str().unwrap(),
        "--no-convert",
        "--target",
        "local",
        "--name",
        "cot",
    ]);
    assert!(o.status.success());
    common::qemu_compare(&corpus.join("images/cot/input.vmdk"), &out.join("cot-sda"));
    common::qemu_check(&out.join("cot-sda"));
}
