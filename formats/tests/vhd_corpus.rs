//! Opt-in check of the real-world corpus (`/work/shared/corpus`, or
//! `V2X_CORPUS`): every vpc/vhdx/vdi row is opened and hashed, and compared
//! with the oracle sha256 of MANIFEST.tsv. Run with `cargo test -- --ignored`.
//! Images larger than 16 GiB are hashed only with `V2X_CORPUS_BIG=1`.

mod vhd_support;

use std::path::{Path, PathBuf};
use v2x_formats::{open_image, OpenOptions};

/// The dirty-log VHDX has no qemu oracle: this is its sha256 after replay.
const DIRTYLOG_SHA: &str = "179cefe8b0587f123393eedf2aa7aa8d25798591178e6bc3950a09762f38f96f";

fn corpus() -> PathBuf {
    std::env::var_os("V2X_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/shared/corpus"))
}

/// Decompresses `.bz2` rows into `tmp`; others are used in place.
fn materialise(path: &Path, tmp: &Path) -> PathBuf {
    let Some(stem) = path.to_str().and_then(|s| s.strip_suffix(".bz2")) else {
        return path.to_path_buf();
    };
    let out = tmp.join(Path::new(stem).file_name().unwrap());
    let data = vhd_support::run_tool("bzip2", &["-dc", path.to_str().unwrap()]);
    std::fs::write(&out, data).unwrap();
    out
}

fn is_sha(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[test]
#[ignore = "needs the shared corpus; slow"]
fn corpus_rows() {
    let root = corpus();
    let manifest = std::fs::read_to_string(root.join("MANIFEST.tsv")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let big = std::env::var_os("V2X_CORPUS_BIG").is_some();
    let mut report = Vec::new();
    for line in manifest.lines().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        let name = f[0];
        let lower = name.to_ascii_lowercase();
        if !(lower.contains(".vhd") || lower.contains(".vdi") || lower.ends_with("afl5.img")) {
            continue;
        }
        let path = materialise(&root.join(name), tmp.path());
        let want = if name.contains("dirtylog") {
            DIRTYLOG_SHA.to_string()
        } else if is_sha(f[11]) {
            f[11].to_string()
        } else {
            // qemu failed: fall back to libyal's hash, if it gave one.
            f[12]
                .split(|c: char| !c.is_ascii_hexdigit())
                .find(|t| is_sha(t))
                .unwrap_or("-")
                .to_string()
        };
        let result = match open_image(&path, &OpenOptions::default()) {
            Err(e) => format!("ERROR {e}"),
            Ok(src) if src.size() > (16 << 30) && !big => {
                format!("opened, size {} (not hashed)", src.size())
            }
            Ok(src) => {
                // Where qemu reads a different size (CHS for 'vpc ' creators),
                // also hash our first qemu-size bytes.
                let qsize = f[3].parse::<u64>().ok().filter(|q| *q != src.size());
                let (got, prefix) = vhd_support::sha256_with_prefix(src.as_ref(), qsize);
                if got == want {
                    format!("PASS {:?}", src.info().notes)
                } else if prefix.as_deref() == Some(want.as_str()) {
                    format!(
                        "SIZE DIFFERS: our {} bytes (current_size) vs qemu's {}; the first {} bytes match qemu",
                        src.size(),
                        f[3],
                        f[3]
                    )
                } else {
                    format!("DIFFERS got {got} size {}", src.size())
                }
            }
        };
        report.push(format!("{name}: {result} (oracle {want})"));
    }
    for r in &report {
        eprintln!("{r}");
    }
}
