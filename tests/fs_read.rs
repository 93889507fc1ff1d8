//! ext2/3/4, NTFS and FAT readers, differential against the reference tools:
//! debugfs (e2fsprogs), ntfsls/ntfscat (ntfs-3g), mdir/mtype (mtools) and
//! blkid (util-linux). Fixtures come from testdata/gen-fs.sh.

mod common;

use common::{fixtures, scratch, tool_ok};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use v2x::fs::guest::GuestRoot;
use v2x::fs::{FileType, Filesystem, FsKind};
use v2x_formats::block::BlockSource;
use v2x_formats::file::HostFile;
use v2x_formats::raw::RawImage;
use v2x_formats::Error;

fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| fixtures("gen-fs.sh"))
}

fn img(name: &str) -> String {
    dir().join(name).to_str().unwrap().to_string()
}

fn source_of(bytes: Vec<u8>) -> Arc<dyn BlockSource> {
    Arc::new(RawImage::new(HostFile::from_bytes("mutant", bytes)).unwrap())
}

fn open(name: &str) -> Arc<dyn Filesystem> {
    let src: Arc<dyn BlockSource> =
        Arc::new(RawImage::new(HostFile::open(Path::new(&img(name))).unwrap()).unwrap());
    v2x::fs::open(src).unwrap().expect("a filesystem")
}

fn text(out: std::process::Output) -> String {
    String::from_utf8(out.stdout).unwrap()
}

/// blkid's TYPE, LABEL and UUID must equal ours.
fn check_blkid(name: &str, fs: &dyn Filesystem) {
    let out = text(tool_ok("blkid", &["-p", "-o", "export", &img(name)]));
    let vars: BTreeMap<&str, &str> = out.lines().filter_map(|l| l.split_once('=')).collect();
    assert_eq!(vars.get("TYPE").copied(), Some(fs.kind_name()), "{name}: {out}");
    assert_eq!(
        vars.get("LABEL").map(|s| s.to_string()),
        fs.label(),
        "{name}: {out}"
    );
    assert_eq!(
        vars.get("UUID").map(|s| s.to_string()),
        fs.uuid(),
        "{name}: {out}"
    );
}

/// Our listing of `path` as (name, type), sorted.
fn ours(fs: &dyn Filesystem, path: &str) -> Vec<(String, FileType)> {
    let mut v: Vec<_> = fs
        .read_dir(path)
        .unwrap()
        .into_iter()
        .map(|e| (e.name, e.file_type))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

// ---------------------------------------------------------------- ext --------

/// `debugfs -R "ls -p DIR"`: name -> (type, size).
fn debugfs_ls(image: &str, dir: &str) -> BTreeMap<String, (FileType, u64)> {
    let out = text(tool_ok("debugfs", &["-R", &format!("ls -p \"{dir}\""), image]));
    let mut map = BTreeMap::new();
    for line in out.lines().filter(|l| l.starts_with('/')) {
        // /ino/mode/uid/gid/name/size/
        let f: Vec<&str> = line.split('/').collect();
        let name = f[5];
        if name == "." || name == ".." {
            continue;
        }
        let mode = u32::from_str_radix(f[2], 8).unwrap();
        let t = match mode & 0o170000 {
            0o100000 => FileType::File,
            0o040000 => FileType::Dir,
            0o120000 => FileType::Symlink,
            _ => FileType::Other,
        };
        map.insert(name.to_string(), (t, f[6].parse().unwrap_or(0)));
    }
    map
}

fn debugfs_cat(image: &str, path: &str) -> Vec<u8> {
    tool_ok("debugfs", &["-R", &format!("cat \"{path}\""), image]).stdout
}

/// Walks the whole tree, comparing every listing, size, file and link with debugfs.
fn check_ext_tree(name: &str) -> usize {
    let image = img(name);
    let fs = open(name);
    assert_eq!(fs.kind(), FsKind::Ext);
    let mut todo = vec!["/".to_string()];
    let mut checked = 0;
    while let Some(d) = todo.pop() {
        let want = debugfs_ls(&image, &d);
        let got = ours(fs.as_ref(), &d);
        let got_map: BTreeMap<String, FileType> = got.iter().cloned().collect();
        let want_types: BTreeMap<String, FileType> = want.iter().map(|(k, v)| (k.clone(), v.0)).collect();
        assert_eq!(got_map, want_types, "{name}: listing of {d}");
        for (n, (t, size)) in want {
            let p = join(&d, &n);
            let meta = fs.lstat(&p).unwrap();
            assert_eq!(meta.file_type, t, "{name}:{p}");
            match t {
                FileType::Dir if n != "lost+found" => todo.push(p),
                FileType::File => {
                    assert_eq!(meta.size, size, "{name}:{p} size");
                    // Files over 16 MiB (the sparse one) are checked by block below.
                    if size > 0 && size < 16 << 20 {
                        assert!(
                            fs.read_file(&p, u64::MAX).unwrap() == debugfs_cat(&image, &p),
                            "{name}:{p} bytes"
                        );
                        checked += 1;
                    }
                }
                FileType::Symlink => {
                    let stat = text(tool_ok("debugfs", &["-R", &format!("stat \"{p}\""), &image]));
                    let want = match stat.split_once("Fast link dest: \"") {
                        Some((_, rest)) => rest.split_once('"').unwrap().0.to_string(),
                        None => String::from_utf8(debugfs_cat(&image, &p)).unwrap(),
                    };
                    assert_eq!(fs.read_link(&p).unwrap(), want, "{name}:{p} target");
                    checked += 1;
                }
                _ => {}
            }
        }
    }
    checked
}

#[test]
fn ext_variants_match_blkid() {
    for name in ["ext2.img", "ext3.img", "ext4.img"] {
        let fs = open(name);
        check_blkid(name, fs.as_ref());
        assert!(fs.notes().is_empty(), "{name}: {:?}", fs.notes());
    }
}

#[test]
fn ext4_tree_matches_debugfs() {
    // Big file, htree directory, fast/slow/relative/absolute links.
    assert!(check_ext_tree("ext4.img") >= 6);
    assert_eq!(open("ext4.img").read_dir("/big").unwrap().len(), 3000);
}

#[test]
fn ext2_and_ext3_trees_match_debugfs() {
    assert!(check_ext_tree("ext2.img") >= 6);
    assert!(check_ext_tree("ext3.img") >= 6);
}

/// The sparse 600 MiB file: larger than the read cap as a whole, readable in
/// ranges; bytes match the block debugfs maps them to, holes read as zero.
#[test]
fn ext4_sparse_file_reads_by_range_and_hits_the_cap() {
    let image = img("ext4.img");
    let fs = open("ext4.img");
    let meta = fs.lstat("/sparse").unwrap();
    assert_eq!(meta.size, 600 << 20);
    assert!(matches!(
        fs.read_file("/sparse", v2x::fs::MAX_FILE_READ),
        Err(Error::LimitExceeded { .. })
    ));
    assert!(matches!(
        fs.read_range("/sparse", 0, u64::MAX),
        Err(Error::LimitExceeded { .. })
    ));
    let dump = text(tool_ok("dumpe2fs", &["-h", &image]));
    let bs: u64 = dump
        .lines()
        .find_map(|l| l.strip_prefix("Block size:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let raw = std::fs::read(&image).unwrap();
    for off in [300u64 << 20, 0, 100 << 20, (600 << 20) - bs] {
        let logical = off / bs;
        let out = text(tool_ok(
            "debugfs",
            &["-R", &format!("bmap /sparse {logical}"), &image],
        ));
        let phys: u64 = out.trim().parse().unwrap();
        let want = if phys == 0 {
            vec![0u8; bs as usize]
        } else {
            raw[(phys * bs) as usize..((phys + 1) * bs) as usize].to_vec()
        };
        assert_eq!(
            fs.read_range("/sparse", off, bs).unwrap(),
            want,
            "block {logical}"
        );
    }
    assert!(fs
        .read_range("/sparse", 300 << 20, 18)
        .unwrap()
        .starts_with(b"data in the middle"));
}

#[test]
fn ext4_partial_reads_match_debugfs() {
    let fs = open("ext4.img");
    let p = "/usr/lib/modules/6.1.0/vmlinuz";
    let whole = debugfs_cat(&img("ext4.img"), p);
    for (off, len) in [
        (0u64, 1u64),
        (4095, 2),
        (1 << 20, 20000),
        (whole.len() as u64 - 5, 100),
    ] {
        let got = fs.read_range(p, off, len).unwrap();
        let end = (off + len).min(whole.len() as u64) as usize;
        assert_eq!(got, whole[off as usize..end], "{off}+{len}");
    }
    assert!(fs.read_range(p, whole.len() as u64 + 10, 5).unwrap().is_empty());
}

#[test]
fn absolute_ext4_symlink_resolves_inside_the_image() {
    let root = GuestRoot::new(open("ext4.img"), "ext4");
    let image = img("ext4.img");
    assert_eq!(
        root.read_file("/boot/abs-link").unwrap(),
        debugfs_cat(&image, "/usr/lib/modules/6.1.0/vmlinuz")
    );
    assert_eq!(
        root.read_file("/usr/os-release").unwrap(),
        debugfs_cat(&image, "/etc/os-release")
    );
}

#[test]
fn ext4_journal_needing_recovery_is_replayed_in_memory() {
    let name = "ext4-journal.img";
    let image = img(name);
    // Without replay the entry does not exist; after debugfs replays a copy it does.
    assert!(!debugfs_ls(&image, "/").contains_key("replayed"));
    let tmp = scratch("journal");
    let copy = tmp.path().join("copy.img");
    std::fs::copy(&image, &copy).unwrap();
    let copy = copy.to_str().unwrap();
    tool_ok("debugfs", &["-w", "-R", "jr", copy]);
    let want = debugfs_ls(copy, "/");
    assert!(want.contains_key("replayed"));

    let fs = open(name);
    let got: BTreeMap<String, FileType> = ours(fs.as_ref(), "/").into_iter().collect();
    let want: BTreeMap<String, FileType> = want.into_iter().map(|(k, v)| (k, v.0)).collect();
    assert_eq!(got, want);
    assert!(
        fs.notes().iter().any(|n| n.contains("replayed in memory")),
        "{:?}",
        fs.notes()
    );
}

/// ext4-view replays only 64-bit journals with checksum v3; others that need
/// recovery are refused with a clear Unsupported error, never read stale.
#[test]
fn ext4_journal_it_cannot_replay_is_unsupported() {
    let image = img("ext4-journal-plain.img");
    let out = text(tool_ok("dumpe2fs", &["-h", &image]));
    assert!(out.contains("needs_recovery"), "{out}");
    let src: Arc<dyn BlockSource> =
        Arc::new(RawImage::new(HostFile::open(Path::new(&image)).unwrap()).unwrap());
    match v2x::fs::open(src) {
        Err(Error::Unsupported(m)) => assert!(m.contains("journal"), "{m}"),
        Err(e) => panic!("unexpected error kind {e}"),
        Ok(_) => panic!("journal needing recovery silently ignored"),
    }
}

/// Mutations of one superblock field at a documented offset give an error, never a panic.
#[test]
fn damaged_ext_superblocks_give_errors() {
    let good = std::fs::read(img("ext4.img")).unwrap();
    // (offset in the image, new bytes, what)
    let cases: &[(usize, &[u8], &str)] = &[
        (1024 + 0x18, &[40, 0, 0, 0], "s_log_block_size"),
        (1024 + 0x20, &[0, 0, 0, 0], "s_blocks_per_group"),
        (1024 + 0x28, &[0, 0, 0, 0], "s_inodes_per_group"),
        (1024 + 0x58, &[0xff, 0xff], "s_inode_size"),
        (1024 + 0x60, &[0, 0, 0, 0x80], "s_feature_incompat unknown bit"),
        (1024 + 0xFE, &[3, 0], "s_desc_size"),
    ];
    for (off, bytes, what) in cases {
        let mut bad = good.clone();
        bad[*off..*off + bytes.len()].copy_from_slice(bytes);
        match v2x::fs::open(source_of(bad)) {
            Err(Error::Corrupt { .. } | Error::Unsupported(_)) => {}
            Err(e) => panic!("{what}: unexpected error kind {e}"),
            Ok(_) => panic!("{what}: damaged superblock accepted"),
        }
    }
    // A wrong magic is simply not ext; opening it as ext names the offset.
    let mut bad = good;
    bad[1080] = 0;
    assert!(v2x::fs::open(source_of(bad.clone())).unwrap().is_none());
    match v2x::fs::probe::open_as(FsKind::Ext, source_of(bad)) {
        Err(Error::Corrupt { offset, .. }) => assert_eq!(offset, 0x438),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("bad magic accepted"),
    }
}

// ---------------------------------------------------------------- NTFS -------

fn ntfsls(dir: &str) -> Vec<(String, bool)> {
    let out = text(tool_ok("ntfsls", &["-F", "-p", dir, &img("ntfs.img")]));
    let mut v: Vec<(String, bool)> = out
        .lines()
        .filter(|l| *l != "./" && *l != "../")
        .map(|l| match l.strip_suffix('/') {
            Some(d) => (d.to_string(), true),
            None => (l.to_string(), false),
        })
        .collect();
    v.sort();
    v
}

fn ntfscat(path: &str) -> Vec<u8> {
    tool_ok("ntfscat", &[&img("ntfs.img"), path]).stdout
}

#[test]
fn ntfs_tree_matches_ntfsls_and_ntfscat() {
    let fs = open("ntfs.img");
    check_blkid("ntfs.img", fs.as_ref());
    let mut todo = vec!["/".to_string()];
    let mut files = 0;
    while let Some(d) = todo.pop() {
        let got: Vec<(String, bool)> = ours(fs.as_ref(), &d)
            .into_iter()
            .map(|(n, t)| (n, t == FileType::Dir))
            .collect();
        assert_eq!(got, ntfsls(&d), "listing of {d}");
        for (n, is_dir) in got {
            let p = join(&d, &n);
            if is_dir {
                todo.push(p);
            } else if fs.lstat(&p).unwrap().file_type == FileType::File {
                assert!(fs.read_file(&p, u64::MAX).unwrap() == ntfscat(&p), "{p}");
                files += 1;
            }
        }
    }
    assert!(files >= 300, "{files}");
}

#[test]
fn ntfs_lookup_falls_back_to_case_insensitive() {
    let fs = open("ntfs.img");
    let want = ntfscat("/Windows/System32/config/SYSTEM");
    assert_eq!(
        fs.read_file("/windows/SYSTEM32/Config/system", 1 << 20).unwrap(),
        want
    );
    assert_eq!(
        fs.read_file("/Windows/System32/ntoskrnl.exe", u64::MAX).unwrap(),
        ntfscat("/Windows/System32/ntoskrnl.exe")
    );
    assert!(matches!(fs.lstat("/Windows/nope"), Err(Error::NotFound(_))));
}

#[test]
fn ntfs_symlink_reparse_point_is_a_symlink() {
    let fs = open("ntfs.img");
    // gen-fs.sh stored IO_REPARSE_TAG_SYMLINK with target \Windows\System32;
    // ntfsinfo is the oracle for the tag.
    let info = text(tool_ok("ntfsinfo", &["-F", "/syslink", &img("ntfs.img")]));
    assert!(info.contains("0xa000000c (symlink)"), "{info}");
    assert_eq!(fs.lstat("/syslink").unwrap().file_type, FileType::Symlink);
    assert_eq!(fs.read_link("/syslink").unwrap(), "/Windows/System32");
    let root = GuestRoot::new(fs, "ntfs");
    assert_eq!(
        root.read_file("/syslink/config/SYSTEM").unwrap(),
        ntfscat("/Windows/System32/config/SYSTEM")
    );
}

#[test]
fn damaged_ntfs_boot_sectors_give_errors() {
    let good = std::fs::read(img("ntfs.img")).unwrap();
    let cases: &[(usize, &[u8], &str)] = &[
        (0x0B, &[0x00, 0x03], "bytes per sector 768"),
        (0x0D, &[0], "sectors per cluster 0"),
        (
            0x30,
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f],
            "MFT cluster",
        ),
        (0x40, &[0x7f], "clusters per file record"),
    ];
    for (off, bytes, what) in cases {
        let mut bad = good.clone();
        bad[*off..*off + bytes.len()].copy_from_slice(bytes);
        match v2x::fs::open(source_of(bad)) {
            Err(Error::Corrupt { .. } | Error::Unsupported(_) | Error::LimitExceeded { .. }) => {}
            Err(e) => panic!("{what}: unexpected error kind {e}"),
            Ok(_) => panic!("{what}: damaged boot sector accepted"),
        }
    }
}

// ---------------------------------------------------------------- FAT --------

fn mtools(cmd: &str, args: &[&str]) -> Vec<u8> {
    std::env::set_var("MTOOLS_SKIP_CHECK", "1");
    tool_ok(cmd, args).stdout
}

#[test]
fn fat_trees_match_mdir_and_mtype() {
    for name in ["fat16.img", "fat32.img"] {
        let image = img(name);
        let fs = open(name);
        check_blkid(name, fs.as_ref());
        // mdir -/ -b lists every path recursively, directories with a trailing slash.
        let listing = String::from_utf8(mtools("mdir", &["-/", "-b", "-i", &image, "::/"])).unwrap();
        let mut want: Vec<String> = listing
            .lines()
            .map(|l| l.trim_start_matches("::").to_string())
            .collect();
        want.sort();
        let mut got = Vec::new();
        let mut todo = vec!["/".to_string()];
        while let Some(d) = todo.pop() {
            for e in fs.read_dir(&d).unwrap() {
                let p = join(&d, &e.name);
                if e.file_type == FileType::Dir {
                    got.push(format!("{p}/"));
                    todo.push(p);
                } else {
                    let bytes = fs.read_file(&p, u64::MAX).unwrap();
                    assert!(
                        bytes == mtools("mtype", &["-i", &image, &format!("::{p}")]),
                        "{name}:{p}"
                    );
                    got.push(p);
                }
            }
        }
        got.sort();
        assert_eq!(got, want, "{name}");
        assert!(got.len() > 200);
        // Case-insensitive lookup, as the firmware does.
        assert_eq!(
            fs.read_file("/efi/boot/bootx64.efi", 1 << 20).unwrap(),
            mtools("mtype", &["-i", &image, "::/EFI/BOOT/BOOTX64.EFI"])
        );
    }
}

#[test]
fn damaged_fat_boot_sectors_give_errors() {
    let good = std::fs::read(img("fat32.img")).unwrap();
    for (off, val) in [(13usize, 0u8), (13, 3), (16, 0), (12, 3)] {
        let mut bad = good.clone();
        bad[off] = val;
        // Not FAT-looking any more: probing says "nothing here", opening says why.
        assert!(
            v2x::fs::open(source_of(bad.clone())).unwrap().is_none(),
            "byte {off}"
        );
        assert!(matches!(
            v2x::fs::probe::open_as(FsKind::Fat, source_of(bad)),
            Err(Error::Corrupt { offset: 0, .. })
        ));
    }
    // A FAT32 root cluster pointing past the end is an error, not a panic.
    let mut bad = good;
    bad[44..48].copy_from_slice(&0x0fff_fff0u32.to_le_bytes());
    if let Ok(Some(fs)) = v2x::fs::open(source_of(bad)) {
        assert!(matches!(fs.read_dir("/"), Err(Error::Corrupt { .. })));
    }
}

// ---------------------------------------------------------------- probe ------

#[test]
fn probe_names_each_fixture_and_skips_a_bare_mbr() {
    for (name, kind) in [
        ("ext2.img", FsKind::Ext),
        ("ext4.img", FsKind::Ext),
        ("ntfs.img", FsKind::Ntfs),
        ("fat16.img", FsKind::Fat),
        ("fat32.img", FsKind::Fat),
    ] {
        let src = RawImage::new(HostFile::open(Path::new(&img(name))).unwrap()).unwrap();
        assert_eq!(v2x::fs::probe::probe(&src).unwrap(), Some(kind), "{name}");
    }
    // An MBR written by sfdisk ends in 55 AA but holds no BPB.
    let tmp = scratch("mbr");
    let disk = tmp.path().join("disk.img");
    std::fs::write(&disk, vec![0u8; 4 << 20]).unwrap();
    let script = tmp.path().join("layout");
    std::fs::write(&script, "label: dos\nstart=2048, type=83\n").unwrap();
    let out = std::process::Command::new("sfdisk")
        .arg(&disk)
        .stdin(std::fs::File::open(&script).unwrap())
        .output()
        .expect("sfdisk (package fdisk) must be installed");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bytes = std::fs::read(&disk).unwrap();
    assert_eq!(bytes[510..512], [0x55, 0xAA]);
    assert!(v2x::fs::open(source_of(bytes)).unwrap().is_none());
}

/// The FAT16 "dirty" bit (boot sector byte 37, bit 0) becomes a note; fsck.fat agrees it is set.
#[test]
fn fat_dirty_bit_becomes_a_note() {
    assert!(open("fat16.img").notes().is_empty());
    let tmp = scratch("fatdirty");
    let copy = tmp.path().join("dirty.img");
    let mut bytes = std::fs::read(img("fat16.img")).unwrap();
    bytes[37] |= 1;
    std::fs::write(&copy, &bytes).unwrap();
    let out = common::tool("fsck.vfat", &["-n", copy.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Dirty bit is set"));
    let fs = v2x::fs::open(source_of(bytes)).unwrap().unwrap();
    assert!(fs.notes().iter().any(|n| n.contains("dirty")), "{:?}", fs.notes());
}
