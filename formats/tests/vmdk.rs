//! VMDK reader and writer against qemu-img as the oracle.
//!
//! Images come from `testdata/gen-vmdk.sh` (run once per test process);
//! qemu-img and qemu-io must be installed: a missing tool fails the test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use v2x_formats::block::ExtentKind;
use v2x_formats::{open_image, BlockSource, Error, OpenOptions};

/// Runs a tool and returns its stdout; panics loudly when it is missing or fails.
fn run(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool} is required for the VMDK tests and could not be run: {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The generated images, made once per test process.
fn gen_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("vmdk-gen-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/gen-vmdk.sh");
        run("sh", &[script.to_str().unwrap(), dir.to_str().unwrap()]);
        dir
    })
}

fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("vmdk-scratch-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// qemu-img's raw conversion of `img`, into a scratch file.
fn qemu_raw(img: &Path, tag: &str) -> PathBuf {
    let out = scratch(&format!("{tag}.raw"));
    run(
        "qemu-img",
        &[
            "convert",
            "-O",
            "raw",
            img.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    out
}

/// Compares every byte of `src` with the raw file `raw`, and checks the map:
/// bytes outside Data extents must be zero.
fn assert_same_as_raw(src: &dyn BlockSource, raw: &Path, what: &str) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(raw).unwrap();
    let size = f.metadata().unwrap().len();
    assert_eq!(src.size(), size, "{what}: virtual size");
    let map = src.map(0, size).unwrap();
    assert_eq!(map.first().map(|e| e.start), Some(0).filter(|_| size > 0));
    assert_eq!(map.last().map(|e| e.end()).unwrap_or(0), size, "{what}: map end");
    let mut ours = vec![0u8; 1 << 20];
    let mut theirs = vec![0u8; 1 << 20];
    for e in &map {
        let mut pos = e.start;
        while pos < e.end() {
            let n = (e.end() - pos).min(1 << 20) as usize;
            f.read_exact_at(&mut theirs[..n], pos).unwrap();
            if e.kind != ExtentKind::Data {
                assert!(
                    theirs[..n].iter().all(|b| *b == 0),
                    "{what}: map says {:?} at {pos:#x} but qemu reads data",
                    e.kind
                );
            }
            ours[..n].fill(0xee);
            src.read_at(pos, &mut ours[..n]).unwrap();
            if ours[..n] != theirs[..n] {
                let i = ours[..n]
                    .iter()
                    .zip(&theirs[..n])
                    .position(|(a, b)| a != b)
                    .unwrap();
                panic!("{what}: differs from qemu at {:#x}", pos + i as u64);
            }
            pos += n as u64;
        }
    }
}

fn open(p: &Path) -> Box<dyn BlockSource> {
    open_image(p, &OpenOptions::default()).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn generated_images_match_qemu() {
    let dir = gen_dir();
    let list = std::fs::read_to_string(dir.join("images.txt")).unwrap();
    for name in list.lines() {
        let img = dir.join(name);
        let raw = qemu_raw(&img, name);
        let src = open(&img);
        assert_same_as_raw(src.as_ref(), &raw, name);
        let _ = std::fs::remove_file(raw);
    }
}
