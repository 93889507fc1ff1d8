//! `BlockSource::prefetch` reaches the image file: after a prefetch of a
//! guest range, the pages of the file that store it are in the page cache.
//! util-linux `fincore` is the oracle. Images are written by qemu-img, their
//! pages dropped from the cache (fsync, then POSIX_FADV_DONTNEED), the image
//! opened, and the resident bytes counted before and after the prefetch.

mod common;

use std::path::Path;
use v2x_formats::ExtentKind;

const MIB: u64 = 1 << 20;

/// Bytes of `path` in the page cache.
fn resident(path: &Path) -> u64 {
    let out = common::run(
        "fincore",
        &[
            "--bytes",
            "--noheadings",
            "--output",
            "RES",
            path.to_str().unwrap(),
        ],
    );
    String::from_utf8_lossy(&out).trim().parse().unwrap()
}

/// The kernel reads prefetched ranges asynchronously: waits (up to 20 s)
/// until at least `want` bytes of `path` are resident, and returns the count.
fn resident_at_least(path: &Path, want: u64) -> u64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let r = resident(path);
        if r >= want || std::time::Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Resident bytes once they stop growing (sampled 200 ms apart).
fn settled(path: &Path) -> u64 {
    let mut last = resident(path);
    loop {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let r = resident(path);
        if r == last {
            return r;
        }
        last = r;
    }
}

fn evict(path: &Path) {
    let f = std::fs::File::open(path).unwrap();
    f.sync_all().unwrap();
    rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).unwrap();
}

/// An 8 MiB disk holding random-looking data in [2 MiB, 6 MiB) only.
fn write_raw(path: &Path) {
    let mut data = vec![0u8; 8 * MIB as usize];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for b in &mut data[2 * MIB as usize..6 * MIB as usize] {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(path, data).unwrap();
}

#[test]
fn prefetch_brings_the_stored_data_into_the_page_cache() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let raw = dir.path().join("disk.raw");
    write_raw(&raw);
    let mut images = vec![raw.clone()];
    for (name, fmt, opts) in [
        ("disk.qcow2", "qcow2", "cluster_size=65536"),
        ("disk.vhd", "vpc", "subformat=dynamic"),
        ("disk.vhdx", "vhdx", "subformat=dynamic"),
        ("disk.vdi", "vdi", "static=off"),
        ("disk.vmdk", "vmdk", "subformat=monolithicSparse"),
        ("stream.vmdk", "vmdk", "subformat=streamOptimized"),
    ] {
        let out = dir.path().join(name);
        common::qemu_img(&[
            "convert",
            "-f",
            "raw",
            "-O",
            fmt,
            "-o",
            opts,
            raw.to_str().unwrap(),
            out.to_str().unwrap(),
        ]);
        images.push(out);
    }
    for img in &images {
        evict(img);
        let src = common::open(img);
        let before = resident(img);
        assert!(
            before < MIB,
            "{}: {before} bytes still cached after eviction (is the file system tmpfs?)",
            img.display()
        );
        // Nothing is read for a range without data.
        src.prefetch(0, 2 * MIB);
        src.prefetch(7 * MIB, 10 * MIB);
        let idle = settled(img) - before;
        src.prefetch(2 * MIB, 4 * MIB);
        // (Less a little: a page or two of the data may share a page with
        // metadata the open already read.)
        // (A streamOptimized file may hold the data compressed: then all of it.)
        let file_len = std::fs::metadata(img).unwrap().len();
        let want = (4 * MIB).min(file_len - before) - 64 * 1024;
        let after = resident_at_least(img, before + idle + want);
        assert!(
            after - before - idle >= want,
            "{}: prefetch of 4 MiB of data cached {} bytes ({before} before)",
            img.display(),
            after - before
        );
        // Where the image stores nothing (its own map says so: not a raw
        // file full of written zeros, nor a VHDX whose one block spans the
        // disk), a prefetch reads nothing.
        let mut maps = src.map(0, 2 * MIB).unwrap();
        maps.extend(src.map(7 * MIB, MIB).unwrap());
        if maps.iter().all(|e| e.kind != ExtentKind::Data) {
            assert!(idle < MIB, "{}: empty ranges cached {idle} bytes", img.display());
        }
    }
}
