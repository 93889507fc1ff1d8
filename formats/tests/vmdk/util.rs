//! Oracle helpers: the generator, qemu-img, byte and map comparison, the writer driver.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use v2x_formats::block::ExtentKind;
use v2x_formats::{open_image, BlockSource, Error, Format, OpenOptions};

/// Runs a tool and returns its stdout; panics loudly when it is missing or fails.
pub fn run(tool: &str, args: &[&str]) -> String {
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
pub fn gen_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        remove_stale_dirs();
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("vmdk-gen-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/gen-vmdk.sh");
        run("sh", &[script.to_str().unwrap(), dir.to_str().unwrap()]);
        dir
    })
}

/// Removes the generated and scratch directories of earlier test runs
/// (named after their process id) whose process has exited.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(env!("CARGO_TARGET_TMPDIR")) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix("vmdk-gen-")
            .or_else(|| name.strip_prefix("vmdk-scratch-"));
        if let Some(pid) = pid.and_then(|p| p.parse::<u32>().ok()) {
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// A path in this process's scratch directory.
pub fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("vmdk-scratch-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// qemu-img's raw conversion of `img`, into a scratch file.
pub fn qemu_raw(img: &Path, tag: &str) -> PathBuf {
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
/// bytes outside Data extents must be zero. Where both our map and the raw
/// file's holes say "zero", only a sample is read, so a 4 GiB sparse disk
/// stays fast.
pub fn assert_same_as_raw(src: &dyn BlockSource, raw: &Path, what: &str) {
    let raw_opts = OpenOptions {
        format: Some(Format::Raw),
        ..OpenOptions::default()
    };
    let theirs_src = open_image(raw, &raw_opts).unwrap();
    let size = theirs_src.size();
    assert_eq!(src.size(), size, "{what}: virtual size");
    let map = src.map(0, size).unwrap();
    assert_eq!(map.first().map(|e| e.start), Some(0).filter(|_| size > 0));
    assert_eq!(map.last().map(|e| e.end()).unwrap_or(0), size, "{what}: map end");
    for w in map.windows(2) {
        assert_eq!(w[0].end(), w[1].start, "{what}: map not contiguous");
    }
    if size <= 64 << 20 {
        // One read across every extent boundary at once, too.
        let whole = read_all(src);
        same(&whole, &read_all(theirs_src.as_ref()), what);
    }
    let raw_map = theirs_src.map(0, size).unwrap();
    let mut ours = vec![0u8; 1 << 20];
    let mut theirs = vec![0u8; 1 << 20];
    for e in &map {
        let mut pos = e.start;
        while pos < e.end() {
            let r = raw_map.iter().find(|r| r.start <= pos && pos < r.end()).unwrap();
            let n = (e.end().min(r.end()) - pos).min(1 << 20) as usize;
            if e.kind != ExtentKind::Data && r.kind != ExtentKind::Data {
                // Both say zero: sample ours and skip the rest of the run.
                let k = n.min(4096);
                src.read_at(pos, &mut ours[..k]).unwrap();
                assert!(
                    ours[..k].iter().all(|b| *b == 0),
                    "{what}: hole at {pos:#x} not zero"
                );
                pos = e.end().min(r.end());
                continue;
            }
            theirs_src.read_at(pos, &mut theirs[..n]).unwrap();
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

pub fn open(p: &Path) -> Box<dyn BlockSource> {
    open_image(p, &OpenOptions::default()).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Copies `src` into a new streamOptimized VMDK at `out` the way the copier
/// does: chunks encoded in parallel, written in order.
pub fn write_vmdk(src: &dyn BlockSource, out: &Path) -> v2x_formats::sink::WriteSummary {
    use rayon::prelude::*;
    use v2x_formats::{create_writer, OutputFormat, WriteOptions};
    let file = std::fs::File::create(out).unwrap();
    let mut w = create_writer(OutputFormat::Vmdk, file, src.size(), &WriteOptions::default()).unwrap();
    let enc = w.encoder();
    let chunk = 4 * w.cluster_size();
    let offsets: Vec<u64> = (0..src.size().div_ceil(chunk)).map(|i| i * chunk).collect();
    for batch in offsets.chunks(16) {
        let encoded: Vec<_> = batch
            .par_iter()
            .map(|&off| {
                let n = (src.size() - off).min(chunk) as usize;
                let mut data = vec![0u8; n];
                src.read_at(off, &mut data).unwrap();
                enc.encode(off, data).unwrap()
            })
            .collect();
        for c in encoded {
            w.write_chunk(&c).unwrap();
        }
    }
    w.finish().unwrap()
}

pub fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

pub fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

pub fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// Writes `bytes` to a scratch file and opens it.
pub fn open_bytes(name: &str, bytes: &[u8]) -> v2x_formats::Result<Box<dyn BlockSource>> {
    let p = scratch(name);
    std::fs::write(&p, bytes).unwrap();
    open_image(&p, &OpenOptions::default())
}

/// The error of a result whose Ok side is not Debug.
pub fn err<T>(r: v2x_formats::Result<T>) -> Error {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

/// Asserts equal bytes, reporting the first difference instead of both buffers.
pub fn same(a: &[u8], b: &[u8], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: length");
    if let Some(i) = a.iter().zip(b).position(|(x, y)| x != y) {
        panic!("{what}: first difference at {i:#x}: {} vs {}", a[i], b[i]);
    }
}

pub fn read_all(src: &dyn BlockSource) -> Vec<u8> {
    let mut v = vec![0u8; src.size() as usize];
    src.read_at(0, &mut v).unwrap();
    v
}
