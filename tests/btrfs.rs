//! The btrfs reader against the real btrfs-progs: images made by
//! testdata/gen-btrfs.sh (mkfs.btrfs --rootdir, and a loop mount for
//! subvolumes, snapshots and compression), compared with the source tree,
//! with `btrfs restore` (offline extraction), with what the btrfs CLI said
//! about subvolumes while mounted, and with blkid. Mutation tests patch one
//! field (fixing checksums where needed) and expect the exact error kind.

mod common;

use common::{fixtures, scratch, tool, tool_ok};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use v2x::fs::guest::GuestRoot;
use v2x::fs::{FileType, Filesystem, MAX_FILE_READ};
use v2x_formats::block::BlockSource;
use v2x_formats::file::HostFile;
use v2x_formats::raw::RawImage;

fn fx() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| fixtures("gen-btrfs.sh"))
}

fn source(p: &Path) -> Arc<dyn BlockSource> {
    Arc::new(RawImage::new(HostFile::open(p).unwrap()).unwrap())
}

fn open(p: &Path) -> Arc<dyn Filesystem> {
    v2x::fs::open(source(p)).unwrap().expect("a btrfs filesystem")
}

#[derive(Debug, PartialEq, Eq)]
enum Node {
    Dir,
    File { len: u64, sha: String },
    Link(String),
}

fn sha(b: &[u8]) -> String {
    format!("{:x}", Sha256::digest(b))
}

/// Every object under `dir` of a v2x filesystem, by path.
fn walk_fs(fs: &dyn Filesystem, dir: &str, out: &mut BTreeMap<String, Node>) {
    for e in fs.read_dir(dir).unwrap_or_else(|e| panic!("read_dir {dir}: {e}")) {
        let p = if dir == "/" {
            format!("/{}", e.name)
        } else {
            format!("{dir}/{}", e.name)
        };
        let meta = fs.lstat(&p).unwrap_or_else(|e| panic!("lstat {p}: {e}"));
        assert_eq!(
            meta.file_type, e.file_type,
            "{p}: entry type and inode type differ"
        );
        let node = match e.file_type {
            FileType::Dir => {
                walk_fs(fs, &p, out);
                Node::Dir
            }
            FileType::File => {
                let data = fs
                    .read_file(&p, MAX_FILE_READ)
                    .unwrap_or_else(|e| panic!("read {p}: {e}"));
                assert_eq!(data.len() as u64, meta.size, "{p}");
                Node::File {
                    len: meta.size,
                    sha: sha(&data),
                }
            }
            FileType::Symlink => Node::Link(fs.read_link(&p).unwrap()),
            FileType::Other => panic!("{p}: unexpected special file"),
        };
        out.insert(p, node);
    }
}

/// Every object under a host directory, by path from it.
fn walk_host(root: &Path, rel: &str, out: &mut BTreeMap<String, Node>) {
    for e in std::fs::read_dir(root.join(rel.trim_start_matches('/'))).unwrap() {
        let e = e.unwrap();
        let p = format!("{rel}/{}", e.file_name().to_string_lossy());
        let ft = e.file_type().unwrap();
        let node = if ft.is_dir() {
            walk_host(root, &p, out);
            Node::Dir
        } else if ft.is_symlink() {
            Node::Link(
                std::fs::read_link(e.path())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            )
        } else {
            let data = std::fs::read(e.path()).unwrap();
            Node::File {
                len: data.len() as u64,
                sha: sha(&data),
            }
        };
        out.insert(p, node);
    }
}

fn fs_tree(fs: &dyn Filesystem) -> BTreeMap<String, Node> {
    let mut m = BTreeMap::new();
    walk_fs(fs, "/", &mut m);
    m
}

fn host_tree(dir: &Path) -> BTreeMap<String, Node> {
    let mut m = BTreeMap::new();
    walk_host(dir, "", &mut m);
    m
}

fn assert_same_tree(ours: &BTreeMap<String, Node>, theirs: &BTreeMap<String, Node>, what: &str) {
    for (p, n) in theirs {
        assert_eq!(ours.get(p), Some(n), "{what}: {p}");
    }
    for p in ours.keys() {
        assert!(
            theirs.contains_key(p),
            "{what}: v2x shows {p}, the oracle does not"
        );
    }
}

/// `btrfs restore` of subvolume `id`: the offline content oracle.
fn restore(img: &Path, id: u64) -> tempfile::TempDir {
    let dir = scratch(&format!("btrfs-restore-{id}"));
    tool_ok(
        "btrfs",
        &[
            "restore",
            "-S",
            "-r",
            &id.to_string(),
            img.to_str().unwrap(),
            dir.path().to_str().unwrap(),
        ],
    );
    dir
}

/// (id, path) of each subvolume as `btrfs subvolume list` printed it.
fn cli_subvolumes() -> Vec<(u64, String)> {
    let text = std::fs::read_to_string(fx().join("subvol-list.txt")).unwrap();
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[1].parse().unwrap(), f[8..].join(" "))
        })
        .collect()
}

fn cli_id(path: &str) -> u64 {
    cli_subvolumes().into_iter().find(|(_, p)| p == path).unwrap().0
}

#[test]
fn rootdir_image_matches_its_source_tree_and_blkid() {
    let img = fx().join("plain.img");
    let fs = open(&img);
    assert_eq!(fs.kind_name(), "btrfs");
    let blkid = |tag: &str| {
        let out = tool_ok("blkid", &["-p", "-o", "value", "-s", tag, img.to_str().unwrap()]);
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    assert_eq!(fs.label().unwrap(), blkid("LABEL"));
    assert_eq!(fs.uuid().unwrap(), blkid("UUID"));
    assert_same_tree(
        &fs_tree(fs.as_ref()),
        &host_tree(&fx().join("src")),
        "plain.img vs src",
    );
    // Permission bits and inode types match the source too.
    for p in ["/etc/hostname", "/many", "/etc/os-release", "/data/big.bin"] {
        let host = std::fs::symlink_metadata(fx().join("src").join(&p[1..])).unwrap();
        assert_eq!(fs.lstat(p).unwrap().mode, Some(host.permissions().mode()), "{p}");
    }
    assert_eq!(fs.read_dir("/many").unwrap().len(), 1200);
    assert!(fs.subvolumes().is_empty());
    assert_eq!(fs.lstat("/many/nope").unwrap_err().kind_name(), "not-found");
    assert_eq!(fs.read_dir("/etc/hostname").unwrap_err().kind_name(), "invalid");
    let deep = "/a".repeat(v2x::fs::btrfs::MAX_PATH_COMPONENTS + 1);
    assert_eq!(fs.lstat(&deep).unwrap_err().kind_name(), "limit-exceeded");
}

#[test]
fn partial_reads_match_the_source_bytes() {
    let fs = open(&fx().join("plain.img"));
    for name in ["data/big.bin", "data/sparse.bin"] {
        let host = std::fs::read(fx().join("src").join(name)).unwrap();
        let p = format!("/{name}");
        for (off, len) in [
            (0u64, 1u64),
            (4095, 2),
            (8000, 300_000),
            (3 << 20, 10_001),
            (host.len() as u64 - 5, 100),
        ] {
            let got = fs.read_range(&p, off, len).unwrap();
            let end = (off + len).min(host.len() as u64) as usize;
            assert_eq!(got, host[off as usize..end], "{p} at {off}+{len}");
        }
        assert!(fs.read_range(&p, host.len() as u64 + 10, 5).unwrap().is_empty());
    }
}

#[test]
fn default_subvolume_matches_btrfs_restore() {
    let img = fx().join("main.img");
    let fs = open(&img);
    let default = std::fs::read_to_string(fx().join("default.txt")).unwrap();
    assert!(default.ends_with(" path @\n"), "{default}");
    let oracle = restore(&img, cli_id("@"));
    assert_same_tree(
        &fs_tree(fs.as_ref()),
        &host_tree(oracle.path()),
        "default subvolume vs restore",
    );
    assert_eq!(fs.read_file("/etc/hostname", 100).unwrap(), b"renamed-guest\n");
    assert_eq!(
        fs.read_file("/var/lib/machines/marker", 100).unwrap(),
        b"inside a nested subvolume\n"
    );
    assert_eq!(fs.label().as_deref(), Some("v2x-main"));
    assert_eq!(fs.uuid().as_deref(), Some("5c0ffee0-aaaa-4bbb-8ccc-ddddeeeeffff"));
}

#[test]
fn the_image_really_holds_zlib_lzo_and_zstd_extents() {
    // Guards the comparison above: it covers all three codecs only if the
    // kernel compressed something with each.
    let img = fx().join("main.img");
    let id = cli_id("@").to_string();
    let out = tool_ok(
        "btrfs",
        &["inspect-internal", "dump-tree", "-t", &id, img.to_str().unwrap()],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for c in [
        "compression 1 (zlib)",
        "compression 2 (lzo)",
        "compression 3 (zstd)",
    ] {
        assert!(text.contains(c), "no extent with {c}");
    }
    let fs = open(&img);
    for alg in ["zlib", "lzo", "zstd"] {
        let small = fs.read_file(&format!("/{alg}/small.txt"), 1 << 20).unwrap();
        assert!(small.starts_with(b"line 0000000: the quick brown fox"), "{alg}");
    }
}

#[test]
fn subvolumes_match_the_btrfs_cli() {
    let fs = open(&fx().join("main.img"));
    let ours: Vec<(u64, String)> = fs.subvolumes().into_iter().map(|s| (s.id, s.path)).collect();
    assert_eq!(ours, cli_subvolumes());
    for s in fs.subvolumes() {
        let ro = std::fs::read_to_string(fx().join(format!("ro-{}.txt", s.path.replace('/', "_")))).unwrap();
        assert_eq!(s.read_only, ro.trim() == "ro=true", "{}", s.path);
        assert_eq!(s.is_default, s.path == "@", "{}", s.path);
    }
}

#[test]
fn other_subvolumes_match_btrfs_restore() {
    let img = fx().join("main.img");
    let fs = open(&img);
    for path in ["@home", "snapshots/1/snapshot", "@/var/lib/machines"] {
        let sub = fs.open_subvolume(path).unwrap();
        let oracle = restore(&img, cli_id(path));
        let mut theirs = host_tree(oracle.path());
        if path == "snapshots/1/snapshot" {
            // A snapshot does not include nested subvolumes: the kernel shows
            // an empty directory there, while restore follows the link.
            theirs.retain(|p, _| !p.starts_with("/var/lib/machines/"));
        }
        assert_same_tree(&fs_tree(sub.as_ref()), &theirs, path);
    }
    let snap = fs.open_subvolume("/snapshots/1/snapshot").unwrap();
    assert_eq!(snap.read_file("/etc/hostname", 100).unwrap(), b"btrfs-guest\n");
    assert!(snap.read_dir("/var/lib/machines").unwrap().is_empty());
    let top = fs.open_subvolume("/").unwrap();
    let names: Vec<String> = top.read_dir("/").unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["@", "@home", "snapshots"]);
    assert_eq!(
        top.read_file("/@home/user/docs/note.txt", 100).unwrap(),
        b"hello from home\n"
    );
    let e = fs.open_subvolume("nope").err().expect("no such subvolume");
    assert_eq!(e.kind_name(), "not-found");
}

#[test]
fn guest_root_resolves_links_inside_the_subvolume() {
    let fs = open(&fx().join("main.img"));
    let g = GuestRoot::new(fs, "sda1");
    assert!(g
        .read_file("/etc/os-release")
        .unwrap()
        .starts_with(b"NAME=\"Test Linux\""));
    assert_eq!(g.read_link("/doc-abs").unwrap(), "/usr/share/doc/v2x");
    assert_eq!(g.read_dir("/doc-abs").unwrap().len(), 1);
    let mut home = GuestRoot::new(open(&fx().join("main.img")), "sda1");
    let fs = open(&fx().join("main.img"));
    home.mount("/home", fs.open_subvolume("@home").unwrap(), "sda1")
        .unwrap();
    assert_eq!(
        home.read_file("/home/user/note-link").unwrap(),
        b"hello from home\n"
    );
}

// ---- mutations ----

/// A sparse copy of a fixture image to patch.
fn mutant(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = scratch("btrfs-mutant");
    let p = dir.path().join(name);
    tool_ok(
        "cp",
        &[
            "--sparse=always",
            fx().join(name).to_str().unwrap(),
            p.to_str().unwrap(),
        ],
    );
    (dir, p)
}

fn patch(p: &Path, off: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
    f.write_all_at(bytes, off).unwrap();
}

fn read(p: &Path, off: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut b = vec![0; len];
    std::fs::File::open(p)
        .unwrap()
        .read_exact_at(&mut b, off)
        .unwrap();
    b
}

/// Recomputes the crc32c of the block of `len` bytes at `off` (superblock or tree node).
fn fix_csum(p: &Path, off: u64, len: usize) {
    let b = read(p, off, len);
    patch(p, off, &crc32c::crc32c(&b[0x20..]).to_le_bytes());
}

fn open_err(p: &Path) -> v2x_formats::Error {
    match v2x::fs::open(source(p)) {
        Ok(_) => panic!("{} opened", p.display()),
        Err(e) => e,
    }
}

#[test]
fn bad_superblock_checksum_is_corrupt() {
    let (_d, p) = mutant("plain.img");
    patch(&p, 0x10000 + 0x12b, b"X"); // first label byte
    let e = open_err(&p);
    assert_eq!(e.kind_name(), "corrupt", "{e}");
    assert!(e.to_string().contains("superblock checksum"), "{e}");
}

#[test]
fn chunk_outside_the_device_is_corrupt() {
    let (_d, p) = mutant("plain.img");
    // sys_chunk_array (sb + 0x32b): key (17 bytes), chunk item (48), stripe 0: devid, offset.
    patch(&p, 0x10000 + 0x32b + 17 + 48 + 8, &(1u64 << 40).to_le_bytes());
    fix_csum(&p, 0x10000, 4096);
    let e = open_err(&p);
    assert_eq!(e.kind_name(), "corrupt", "{e}");
    assert!(e.to_string().contains("outside"), "{e}");
}

/// Logical address and physical copies of the first internal node of tree `tree`.
fn first_internal_node(img: &Path, tree: &str) -> (u64, Vec<u64>) {
    let out = tool_ok(
        "btrfs",
        &["inspect-internal", "dump-tree", "-t", tree, img.to_str().unwrap()],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("node ") && !l.contains("level 0"))
        .unwrap_or_else(|| panic!("tree {tree} has no internal node"));
    let logical: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let map = tool_ok(
        "btrfs-map-logical",
        &["-l", &logical.to_string(), img.to_str().unwrap()],
    );
    let phys = String::from_utf8_lossy(&map.stdout)
        .lines()
        .filter_map(|l| l.split("physical ").nth(1))
        .map(|s| s.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    (logical, phys)
}

#[test]
fn tree_loop_is_corrupt_not_a_hang() {
    let (_d, p) = mutant("plain.img");
    let (logical, phys) = first_internal_node(&p, "5");
    for &at in &phys {
        // First key pointer's block pointer := the node itself.
        patch(&p, at + 0x65 + 17, &logical.to_le_bytes());
        fix_csum(&p, at, 16384);
    }
    let fs = open(&p);
    let e = fs.read_dir("/many").unwrap_err();
    assert_eq!(e.kind_name(), "corrupt", "{e}");
    assert!(e.to_string().contains("level"), "{e}");
}

#[test]
fn dup_metadata_survives_one_bad_copy_but_not_two() {
    let (_d, p) = mutant("main.img");
    let id = cli_id("@").to_string();
    let (_, phys) = first_internal_node(&p, &id);
    assert_eq!(phys.len(), 2, "DUP metadata has two copies");
    patch(&p, phys[0] + 0x70, &[0xAA; 8]);
    assert_eq!(open(&p).read_dir("/many").unwrap().len(), 1200);
    patch(&p, phys[1] + 0x70, &[0xAA; 8]);
    let e = open(&p).read_dir("/many").unwrap_err();
    assert_eq!(e.kind_name(), "corrupt", "{e}");
    assert!(e.to_string().contains("checksum mismatch"), "{e}");
}

#[test]
fn reference_tool_checks_the_fixtures_clean() {
    for name in ["check-main.txt", "check-plain.txt"] {
        let text = std::fs::read_to_string(fx().join(name)).unwrap();
        assert!(text.contains("no error found"), "{name}: {text}");
    }
    let _ = tool("btrfs", &["--version"]);
}

#[test]
fn fuzz_seeds_are_real_filesystems() {
    // The seeds in fuzz/corpus/btrfs are sparse encodings of small mkfs.btrfs
    // images; a seed that no longer opens would fuzz nothing but the superblock.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/btrfs");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let data = std::fs::read(e.unwrap().path()).unwrap();
        let disk = Arc::new(v2x::fs::btrfs::fuzz::SparseDisk::from_records(&data));
        let fs = v2x::fs::btrfs::Btrfs::open(disk).unwrap();
        assert!(!fs.read_dir("/").unwrap().is_empty());
        n += 1;
    }
    assert!(n >= 2);
}
