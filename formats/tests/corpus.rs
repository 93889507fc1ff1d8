//! Opt-in check of the readers against real-world images from other
//! projects (`../shared/corpus`, never committed). Run with
//! `V2X_CORPUS=/path/to/shared/corpus cargo test -p v2x-formats --test corpus`.
//! CI sets V2X_CORPUS; when it is set and the corpus is missing, the test
//! fails: asked for and missing is an error, not a skip.
//!
//! The oracle is MANIFEST.tsv's `raw_sha256_qemu`, except for the traps the
//! corpus README lists, which get their own expectation below.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use v2x_formats::detect::Format;
use v2x_formats::file::HostFile;
use v2x_formats::open::probe;
use v2x_formats::{open_image, BlockSource, Error, ExtentKind, OpenOptions};

/// Formats whose readers exist in this build; rows of other formats are
/// listed as pending (their issues are open), not silently passed.
const IMPLEMENTED: &[Format] = &[
    Format::Raw,
    Format::Qcow2,
    Format::Vhd,
    Format::Vhdx,
    Format::Vdi,
    Format::VmdkSparse,
    Format::VmdkCowd,
    Format::VmdkDescriptor,
];

/// What a row must do.
#[derive(Debug)]
enum Expect {
    /// Read to this raw sha256.
    Sha(String),
    /// Be `size` bytes, of which the first `len` read to this sha256.
    Prefix { size: u64, len: u64, sha: String },
    /// Fail cleanly, quickly, with an error whose text contains this.
    Error(&'static str),
}

fn expectation(name: &str, row: &HashMap<&str, &str>) -> Option<Expect> {
    let special = match name {
        "images/qemu-iotests/afl5.img" | "images/qemu-iotests/afl9.vmdk" => Some(Expect::Error("")),
        // qemu ignores the missing parent and reads zeros: its hash is not an oracle.
        "images/dfvfs/fat-differential.vhd" => Some(Expect::Error("fat-parent.vhd")),
        // After replaying the pending log (qemu refuses to open it read-only).
        "images/qemu-iotests/iotest-dirtylog-10G-4M.vhdx" => Some(Expect::Sha(
            "179cefe8b0587f123393eedf2aa7aa8d25798591178e6bc3950a09762f38f96f".into(),
        )),
        // dfvfs edited the UUID without fixing the footer checksum; qemu refuses
        // them. v2x warns and reads them (policy in vhd/mod.rs); libvhdi is the oracle.
        "images/dfvfs/image.vhd" | "images/dfvfs/image-differential.vhd" => {
            Some(Expect::Sha(first_hex64(row.get("raw_sha256_libyal")?)?))
        }
        // Virtual PC: qemu sizes it by CHS; v2x uses the footer's current_size
        // (2 MiB more). The bytes qemu reads must agree.
        "images/qemu-iotests/virtualpc-dynamic.vhd" => Some(Expect::Prefix {
            size: 136365211648,
            len: 136363130880,
            sha: row.get("raw_sha256_qemu")?.to_string(),
        }),
        _ => None,
    };
    if special.is_some() {
        return special;
    }
    match row.get("format").copied() {
        Some("bochs") => return Some(Expect::Error("bochs")),
        Some("parallels") => return Some(Expect::Error("parallels")),
        Some("dmg") => return Some(Expect::Error("dmg")),
        Some("cloop") => return Some(Expect::Error("cloop")),
        _ => {}
    }
    let sha = row.get("raw_sha256_qemu").copied().unwrap_or("-");
    if sha.len() == 64 {
        Some(Expect::Sha(sha.to_string()))
    } else {
        None
    }
}

/// The first 64-hex-digit word in a MANIFEST cell (cells may carry commentary).
fn first_hex64(cell: &str) -> Option<String> {
    let bytes = cell.as_bytes();
    (0..bytes.len().saturating_sub(63))
        .map(|i| &cell[i..i + 64])
        .find(|w| w.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_string)
}

/// sha256 of the whole guest disk, read through the allocation map.
fn guest_sha256(src: &dyn BlockSource, limit: u64) -> Result<String, Error> {
    let mut h = Sha256::new();
    let zeros = vec![0u8; 1 << 20];
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0;
    let end = src.size().min(limit);
    while pos < end {
        let len = (1u64 << 30).min(end - pos);
        for e in src.map(pos, len)? {
            let mut off = e.start;
            while off < e.end() {
                let n = (e.end() - off).min(buf.len() as u64) as usize;
                if e.kind == ExtentKind::Data {
                    src.read_at(off, &mut buf[..n])?;
                    h.update(&buf[..n]);
                } else {
                    h.update(&zeros[..n]);
                }
                off += n as u64;
            }
        }
        pos += len;
    }
    Ok(format!("{:x}", h.finalize()))
}

/// The image file for a row, decompressing `.bz2`-only rows into `tmp`.
fn materialise(corpus: &Path, name: &str, tmp: &Path) -> Option<PathBuf> {
    let p = corpus.join(name);
    if !p.exists() {
        return None;
    }
    if name.ends_with(".bz2") {
        let bz = p;
        let out = tmp.join(Path::new(name).file_stem().unwrap());
        let data = std::process::Command::new("bzip2")
            .args(["-dc", bz.to_str().unwrap()])
            .output()
            .expect("bzip2 must be installed for the corpus test");
        assert!(data.status.success(), "bzip2 -dc {name} failed");
        std::fs::write(&out, data.stdout).unwrap();
        return Some(out);
    }
    Some(p)
}

#[test]
fn corpus_images_read_like_the_oracle() {
    let Some(dir) = std::env::var_os("V2X_CORPUS") else {
        eprintln!("V2X_CORPUS not set: corpus check not requested");
        return;
    };
    let corpus = PathBuf::from(dir);
    let manifest = std::fs::read_to_string(corpus.join("MANIFEST.tsv"))
        .unwrap_or_else(|e| panic!("V2X_CORPUS={} has no MANIFEST.tsv: {e}", corpus.display()));
    let tmp = tempfile::tempdir().unwrap();
    let mut lines = manifest.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let (mut passed, mut failed, mut pending) = (Vec::new(), Vec::new(), Vec::new());
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let row: HashMap<&str, &str> = header.iter().copied().zip(line.split('\t')).collect();
        let name = row["filename"];
        if name.contains('!') {
            pending.push(format!("{name}: OVA member (read through the OVA, issue 7)"));
            continue;
        }
        let Some(expect) = expectation(name, &row) else {
            pending.push(format!("{name}: no oracle in MANIFEST"));
            continue;
        };
        let Some(path) = materialise(&corpus, name, tmp.path()) else {
            failed.push(format!("{name}: listed in MANIFEST but missing from the corpus"));
            continue;
        };
        let format = probe(&HostFile::open(&path).unwrap()).unwrap();
        let refusal = matches!(expect, Expect::Error(_)) && matches!(format, Format::OutOfScope(_));
        if !IMPLEMENTED.contains(&format) && !refusal {
            pending.push(format!("{name}: {format} reader not in this build"));
            continue;
        }
        let opts = OpenOptions::default();
        let start = Instant::now();
        let limit = match &expect {
            Expect::Prefix { len, .. } => *len,
            _ => u64::MAX,
        };
        let result = open_image(&path, &opts).and_then(|s| Ok((s.size(), guest_sha256(s.as_ref(), limit)?)));
        let verdict = match (&expect, result) {
            (Expect::Prefix { size, .. }, Ok((got_size, _))) if got_size != *size => {
                Err(format!("size {got_size}, want {size}"))
            }
            (Expect::Prefix { sha, .. }, Ok((_, got))) if got == *sha => Ok(()),
            (Expect::Prefix { sha, .. }, Ok((_, got))) => Err(format!("prefix sha256 {got}, oracle {sha}")),
            (Expect::Prefix { .. }, Err(e)) => Err(format!("error: {e}")),
            (Expect::Sha(want), Ok((_, got))) if *want == got => Ok(()),
            (Expect::Sha(want), Ok((_, got))) => Err(format!("sha256 {got}, oracle {want}")),
            (Expect::Sha(_), Err(e)) => Err(format!("error: {e}")),
            (Expect::Error(_), Ok((_, got))) => Err(format!("read (sha256 {got}) but must be refused")),
            (Expect::Error(word), Err(e)) => {
                let text = e.to_string();
                if !text.to_lowercase().contains(&word.to_lowercase()) {
                    Err(format!("error does not name '{word}': {text}"))
                } else if start.elapsed() > Duration::from_secs(1) {
                    Err(format!("took {:?} to refuse", start.elapsed()))
                } else {
                    Ok(())
                }
            }
        };
        match verdict {
            Ok(()) => passed.push(name.to_string()),
            Err(why) => failed.push(format!("{name}: {why}")),
        }
    }
    eprintln!(
        "corpus: {} passed, {} failed, {} pending",
        passed.len(),
        failed.len(),
        pending.len()
    );
    for p in &passed {
        eprintln!("  pass     {p}");
    }
    for p in &pending {
        eprintln!("  pending  {p}");
    }
    for f in &failed {
        eprintln!("  FAIL     {f}");
    }
    assert!(failed.is_empty(), "{} corpus rows failed", failed.len());
    assert!(!passed.is_empty(), "no corpus row was checked");
}
