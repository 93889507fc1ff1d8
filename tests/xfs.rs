//! The XFS reader against real filesystems made by mkfs.xfs from a
//! protofile (testdata/gen-xfs.sh): every file, listing and link target is
//! compared with the source tree and with `xfs_db`; label and UUID with
//! blkid; damaged images (changed with `xfs_db -x`) must give clear errors.

mod common;

use common::{fixtures, scratch, tool_ok};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use v2x::fs::guest::GuestRoot;
use v2x::fs::xfs::Xfs;
use v2x::fs::{FileType, Filesystem};
use v2x_formats::block::BlockSource;
use v2x_formats::file::HostFile;
use v2x_formats::raw::RawImage;
use v2x_formats::Error;

fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| fixtures("gen-xfs.sh"))
}

fn source(img: &Path) -> Arc<dyn BlockSource> {
    Arc::new(RawImage::new(HostFile::open(img).unwrap()).unwrap())
}

fn open(img: &Path) -> Arc<dyn Filesystem> {
    v2x::fs::open(source(img)).unwrap().expect("an XFS superblock")
}

fn open_bytes(bytes: Vec<u8>) -> v2x_formats::Result<Xfs> {
    Xfs::open(Arc::new(
        RawImage::new(HostFile::from_bytes("mutated.img", bytes)).unwrap(),
    ))
}

const IMAGES: [&str; 2] = ["v5.img", "v4.img"];

fn xfs_db(img: &Path, cmds: &[&str]) -> String {
    let mut args = vec!["-r"];
    for c in cmds {
        args.extend(["-c", c]);
    }
    args.push(img.to_str().unwrap());
    String::from_utf8(tool_ok("xfs_db", &args).stdout).unwrap()
}

/// Runs `xfs_db -x` commands against an image, changing it.
fn xfs_db_write(img: &Path, cmds: &[&str]) {
    let mut args = vec!["-x"];
    for c in cmds {
        args.extend(["-c", c]);
    }
    args.push(img.to_str().unwrap());
    // xfs_db exits 0 even when a write fails; its messages tell.
    let out = tool_ok("xfs_db", &args);
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !text.contains("error") && !text.contains("failed"),
        "xfs_db {cmds:?}: {text}"
    );
}

#[test]
fn label_and_uuid_match_blkid() {
    for name in IMAGES {
        let img = dir().join(name);
        let fs = open(&img);
        assert_eq!(fs.kind_name(), "xfs");
        let out = String::from_utf8(tool_ok("blkid", &["-p", "-o", "export", img.to_str().unwrap()]).stdout)
            .unwrap();
        let field = |k: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .map(str::to_string)
        };
        assert_eq!(field("TYPE").as_deref(), Some("xfs"));
        assert_eq!(fs.label(), field("LABEL"), "{name}");
        assert_eq!(fs.uuid(), field("UUID"), "{name}");
    }
}

/// Walks the host source tree and the filesystem side by side.
fn compare_tree(fs: &dyn Filesystem, host: &Path, path: &str, counts: &mut [usize; 3]) {
    let mut want: Vec<(String, FileType)> = Vec::new();
    for e in std::fs::read_dir(host).unwrap() {
        let e = e.unwrap();
        let ft = e.file_type().unwrap();
        let t = if ft.is_symlink() {
            FileType::Symlink
        } else if ft.is_dir() {
            FileType::Dir
        } else {
            FileType::File
        };
        want.push((e.file_name().into_string().unwrap(), t));
    }
    want.sort_by(|a, b| a.0.cmp(&b.0));
    let mut got: Vec<(String, FileType)> = fs
        .read_dir(path)
        .unwrap_or_else(|e| panic!("listing {path}: {e}"))
        .into_iter()
        .map(|e| (e.name, e.file_type))
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, want, "listing of {path}");
    for (name, t) in want {
        let child = if path == "/" {
            format!("/{name}")
        } else {
            format!("{path}/{name}")
        };
        let hchild = host.join(&name);
        let meta = fs.lstat(&child).unwrap();
        assert_eq!(meta.file_type, t, "{child}");
        match t {
            FileType::Dir => compare_tree(fs, &hchild, &child, counts),
            FileType::File => {
                let data = std::fs::read(&hchild).unwrap();
                assert_eq!(meta.size, data.len() as u64, "{child}");
                let got = fs
                    .read_file(&child, 64 << 20)
                    .unwrap_or_else(|e| panic!("{child}: {e}"));
                assert!(got == data, "contents of {child} differ");
                counts[0] += 1;
            }
            FileType::Symlink => {
                let target = std::fs::read_link(&hchild).unwrap();
                assert_eq!(fs.read_link(&child).unwrap(), target.to_str().unwrap(), "{child}");
                assert_eq!(meta.size, target.as_os_str().len() as u64, "{child}");
                counts[1] += 1;
            }
            FileType::Other => unreachable!(),
        }
        counts[2] += 1;
    }
}

#[test]
fn every_file_listing_and_link_matches_the_source_tree() {
    for name in IMAGES {
        let fs = open(&dir().join(name));
        let mut counts = [0usize; 3];
        compare_tree(fs.as_ref(), &dir().join("tree"), "/", &mut counts);
        assert!(counts[0] > 22_000 && counts[1] == 7, "{name}: {counts:?}");
        // A partial read in the middle of a multi-extent-sized file.
        let whole = std::fs::read(dir().join("tree/boot/vmlinuz")).unwrap();
        let part = fs.read_range("/boot/vmlinuz", 1_000_003, 70_000).unwrap();
        assert_eq!(part, &whole[1_000_003..1_070_003]);
        let tail = fs
            .read_range("/boot/vmlinuz", whole.len() as u64 - 10, 100)
            .unwrap();
        assert_eq!(tail, &whole[whole.len() - 10..]);
        // Permissions and ownership come from the protofile.
        let meta = fs.lstat("/etc/hostname").unwrap();
        assert_eq!((meta.uid, meta.gid), (Some(1000), Some(100)));
        assert_eq!(meta.mode.map(|m| m & 0o7777), Some(0o644));
    }
}

/// The data fork format and the directory form of `path` according to xfs_db.
fn dir_form(img: &Path, path: &str) -> (&'static str, &'static str) {
    let out = xfs_db(img, &[&format!("path {path}"), "print core.format", "bmap"]);
    if out.contains("core.format = 1") {
        return ("local", "shortform");
    }
    let fork = if out.contains("core.format = 3") {
        "btree"
    } else {
        assert!(out.contains("core.format = 2"), "{out}");
        "extents"
    };
    let offsets: Vec<u64> = out
        .lines()
        .filter_map(|l| l.strip_prefix("data offset "))
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    // 4 KiB blocks: leaf blocks from 32 GiB, free index blocks from 64 GiB.
    let form = if offsets.iter().any(|&o| o >= (64 << 30) / 4096) {
        "node"
    } else if offsets.iter().any(|&o| o >= (32 << 30) / 4096) {
        "leaf"
    } else {
        "block"
    };
    (fork, form)
}

/// (name, inode) pairs of a directory according to `xfs_db ls`.
fn xfs_db_ls(img: &Path, path: &str) -> BTreeSet<(String, u64)> {
    xfs_db(img, &[&format!("ls {path}")])
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert!(f.len() >= 7 && f[f.len() - 1] == "(good)", "xfs_db ls line {l:?}");
            let name = f[5..f.len() - 1].join(" ");
            (name != "." && name != "..").then(|| (name, f[1].parse().unwrap()))
        })
        .collect()
}

#[test]
fn every_directory_form_is_present_and_lists_like_xfs_db() {
    for name in IMAGES {
        let img = dir().join(name);
        let fs = open(&img);
        let mut forms = BTreeSet::new();
        let mut forks = BTreeSet::new();
        for d in [
            "/",
            "/etc",
            "/links",
            "/dirs",
            "/dirs/empty",
            "/dirs/d5",
            "/dirs/d60",
            "/dirs/d200",
            "/dirs/d2000",
            "/dirs/d20000",
        ] {
            let (fork, form) = dir_form(&img, d);
            forks.insert(fork);
            forms.insert(form);
            let want = xfs_db_ls(&img, d);
            let got: BTreeSet<(String, u64)> = fs
                .read_dir(d)
                .unwrap()
                .into_iter()
                .map(|e| {
                    let child = if d == "/" {
                        format!("/{}", e.name)
                    } else {
                        format!("{d}/{}", e.name)
                    };
                    (e.name, fs.lstat(&child).unwrap().ino.unwrap())
                })
                .collect();
            assert_eq!(got, want, "{name}:{d}");
        }
        let all: BTreeSet<&str> = ["shortform", "block", "leaf", "node"].into();
        assert_eq!(forms, all, "{name}: directory forms in the fixture");
        let all: BTreeSet<&str> = ["local", "extents", "btree"].into();
        assert_eq!(forks, all, "{name}: directory data fork formats in the fixture");
    }
}

#[test]
fn symlink_forms_are_inline_and_remote() {
    for name in IMAGES {
        let img = dir().join(name);
        let short = xfs_db(&img, &["path /links/short", "print core.format"]);
        let huge = xfs_db(&img, &["path /links/huge", "print core.format"]);
        assert!(short.contains("core.format = 1"), "{short}");
        assert!(huge.contains("core.format = 2"), "{huge}");
    }
}

#[test]
fn guest_root_reads_through_symlinks() {
    let root = GuestRoot::new(open(&dir().join("v5.img")), "sda1");
    let deep = std::fs::read(dir().join("tree/a/b/c/d/deep.txt")).unwrap();
    assert_eq!(root.read_file("/links/dir/c/d/deep.txt").unwrap(), deep);
    assert_eq!(root.read_file("/links/remote").unwrap(), deep);
    assert_eq!(root.read_file("/links/huge").unwrap(), b"xfs-guest\n");
    assert!(matches!(
        root.read_file("/links/dangling"),
        Err(Error::NotFound(_))
    ));
}

/// A writable copy of a small fixture image.
fn small_copy(name: &str, tmp: &Path) -> PathBuf {
    let p = tmp.join(name);
    std::fs::copy(dir().join(name), &p).unwrap();
    p
}

fn inode_of(img: &Path, path: &str) -> u64 {
    let fs = open(img);
    fs.lstat(path).unwrap().ino.unwrap()
}

#[test]
fn needsrepair_flag_becomes_a_note() {
    let tmp = scratch("xfs-needsrepair");
    let img = small_copy("small-v5.img", tmp.path());
    assert!(open(&img).notes().is_empty());
    // NEEDSREPAIR is incompat bit 0x10 (-d: past the superblock verifier).
    let out = xfs_db(&img, &["sb 0", "print features_incompat"]);
    let v = u32::from_str_radix(out.trim().rsplit("0x").next().unwrap(), 16).unwrap();
    xfs_db_write(
        &img,
        &["sb 0", &format!("write -d features_incompat {:#x}", v | 0x10)],
    );
    let notes = open(&img).notes();
    assert!(notes.len() == 1 && notes[0].contains("xfs_repair"), "{notes:?}");
}

#[test]
fn bad_superblock_magic_is_corrupt_at_offset_zero() {
    let mut bytes = std::fs::read(dir().join("small-v5.img")).unwrap();
    bytes[0] = b'Y';
    match open_bytes(bytes) {
        Err(Error::Corrupt { offset: 0, what }) => assert!(what.contains("magic"), "{what}"),
        other => panic!("expected corruption, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn huge_extent_count_is_refused() {
    let tmp = scratch("xfs-nextents");
    for (name, fork) in [("small-v5.img", "u3"), ("small-v4.img", "u")] {
        let img = small_copy(name, tmp.path());
        let ino = inode_of(&img, "/etc/big");
        let _ = fork;
        xfs_db_write(&img, &[&format!("inode {ino}"), "write core.nextents 4000000"]);
        let err = open(&img).read_file("/etc/big", 1 << 20).unwrap_err();
        assert!(
            matches!(
                err,
                Error::LimitExceeded {
                    what: "XFS extents in one fork",
                    value: 4_000_000,
                    ..
                }
            ),
            "{name}: {err}"
        );
        xfs_db_write(&img, &[&format!("inode {ino}"), "write core.nextents 200"]);
        let err = open(&img).read_file("/etc/big", 1 << 20).unwrap_err();
        assert!(
            matches!(&err, Error::Corrupt { what, .. } if what.contains("do not fit")),
            "{name}: {err}"
        );
    }
}

#[test]
fn unwritten_extents_and_holes_read_as_zeros() {
    let tmp = scratch("xfs-holes");
    for (name, fork) in [("small-v5.img", "u3"), ("small-v4.img", "u")] {
        let img = small_copy(name, tmp.path());
        let ino = inode_of(&img, "/etc/big");
        let data = open(&img).read_file("/etc/big", 1 << 20).unwrap();
        assert_eq!(data, vec![b'x'; 5000]);
        // Shift the only extent two 1 KiB blocks up: a hole at the start.
        xfs_db_write(
            &img,
            &[
                &format!("inode {ino}"),
                &format!("write {fork}.bmx[0].startoff 2"),
            ],
        );
        let got = open(&img).read_file("/etc/big", 1 << 20).unwrap();
        assert_eq!(&got[..2048], &[0u8; 2048][..], "{name}");
        assert_eq!(&got[2048..], &data[..5000 - 2048], "{name}");
        // Mark it unwritten: all zeros.
        xfs_db_write(
            &img,
            &[
                &format!("inode {ino}"),
                &format!("write {fork}.bmx[0].extentflag 1"),
            ],
        );
        assert_eq!(
            open(&img).read_file("/etc/big", 1 << 20).unwrap(),
            vec![0u8; 5000],
            "{name}"
        );
    }
}

#[test]
fn damaged_bmap_btrees_are_corrupt() {
    let tmp = scratch("xfs-btree");
    for (name, fork) in [("v5.img", "u3"), ("v4.img", "u")] {
        let img = tmp.path().join(name);
        tool_ok(
            "cp",
            &[
                "--sparse=always",
                dir().join(name).to_str().unwrap(),
                img.to_str().unwrap(),
            ],
        );
        let ino = inode_of(&img, "/dirs/d20000");
        let root = xfs_db(
            &img,
            &[&format!("inode {ino}"), &format!("print {fork}.bmbt.ptrs[1]")],
        );
        let leaf: u64 = root.trim().rsplit(' ').next().unwrap().parse().unwrap();
        // The root points at the same leaf twice: a cycle-like repeat.
        xfs_db_write(
            &img,
            &[
                &format!("inode {ino}"),
                &format!("write {fork}.bmbt.numrecs 2"),
                &format!("write {fork}.bmbt.ptrs[2] {leaf}"),
            ],
        );
        let err = open(&img).read_dir("/dirs/d20000").unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{name}: {err}");
        // The leaf claims to be a node: a walk that would not go down.
        xfs_db_write(
            &img,
            &[&format!("inode {ino}"), &format!("write {fork}.bmbt.numrecs 1")],
        );
        open(&img).read_dir("/dirs/d20000").unwrap();
        xfs_db_write(
            &img,
            &[&format!("fsblock {leaf}"), "type bmapbtd", "write -d level 1"],
        );
        let err = open(&img).read_dir("/dirs/d20000").unwrap_err();
        assert!(
            matches!(&err, Error::Corrupt { what, .. } if what.contains("level 1 where 0")),
            "{name}: {err}"
        );
        // A root deeper than any real tree.
        xfs_db_write(
            &img,
            &[&format!("inode {ino}"), &format!("write {fork}.bmbt.level 11")],
        );
        let err = open(&img).read_dir("/dirs/d20000").unwrap_err();
        assert!(
            matches!(&err, Error::Corrupt { what, .. } if what.contains("level 11")),
            "{name}: {err}"
        );
    }
}

#[test]
fn bad_directory_block_is_corrupt_at_its_offset() {
    let tmp = scratch("xfs-dirblock");
    for name in IMAGES {
        let img = tmp.path().join(name);
        tool_ok(
            "cp",
            &[
                "--sparse=always",
                dir().join(name).to_str().unwrap(),
                img.to_str().unwrap(),
            ],
        );
        for d in ["/dirs/d60", "/dirs/d2000"] {
            let bmap = xfs_db(&img, &[&format!("path {d}"), "bmap"]);
            let fsb = bmap
                .lines()
                .find_map(|l| l.strip_prefix("data offset 0 startblock "))
                .and_then(|l| l.split_whitespace().next())
                .unwrap();
            let daddr = xfs_db(&img, &[&format!("fsblock {fsb}"), "daddr"]);
            let at = 512 * daddr.trim().rsplit(' ').next().unwrap().parse::<u64>().unwrap();
            let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
            std::os::unix::fs::FileExt::write_all_at(&f, b"JUNK", at).unwrap();
            drop(f);
            match open(&img).read_dir(d) {
                Err(Error::Corrupt { what, offset }) => {
                    assert!(what.contains("bad magic"), "{name}:{d}: {what}");
                    assert_eq!(offset, at, "{name}:{d}");
                }
                other => panic!("{name}:{d}: expected corruption, got {other:?}"),
            }
        }
    }
}
