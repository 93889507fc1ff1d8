//! The ext4 writer against real oracles: every edit is followed by
//! `e2fsck -fn` (exit code 0 only), and what was written is read back with
//! `debugfs` and with the ext4-view crate (an independent reader).
//! Fixtures come from testdata/gen-ext4w.sh.

mod common;

use common::{fixtures, scratch, tool, tool_ok};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use v2x::fs::ext4w::csum::crc32c_raw;
use v2x::fs::ext4w::hash::name_hash;
use v2x::fs::ext4w::{Ext4Writer, FileDevice, FileKind, OverlayRange};
use v2x::overlay::Overlay;
use v2x_formats::block::BlockSource;
use v2x_formats::Error;

fn fx() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| fixtures("gen-ext4w.sh"))
}

/// A private copy of fixture `name`.
fn copy(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = scratch(&format!("ext4w-{name}"));
    let p = dir.path().join(name);
    std::fs::copy(fx().join(name), &p).unwrap();
    (dir, p)
}

fn open(img: &Path) -> Ext4Writer {
    let mut w = Ext4Writer::open(Box::new(FileDevice::open(img).unwrap())).unwrap();
    w.set_time(1_700_000_100);
    w
}

/// `e2fsck -fn` must find nothing at all (exit code 0).
fn fsck(img: &Path, after: &str) {
    let out = tool("e2fsck", &["-fn", img.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "e2fsck after {after}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn debugfs(img: &Path, req: &str) -> Vec<u8> {
    tool_ok("debugfs", &["-R", req, img.to_str().unwrap()]).stdout
}

fn dcat(img: &Path, path: &str) -> Vec<u8> {
    debugfs(img, &format!("cat {path}"))
}

fn dstat(img: &Path, path: &str) -> String {
    String::from_utf8_lossy(&debugfs(img, &format!("stat {path}"))).into_owned()
}

fn view(img: &Path) -> ext4_view::Ext4 {
    ext4_view::Ext4::load(Box::new(std::fs::read(img).unwrap())).unwrap()
}

/// Content both oracles must agree on.
fn assert_content(img: &Path, path: &str, want: &[u8]) {
    assert!(dcat(img, path) == want, "debugfs cat {path} differs");
    assert!(
        view(img).read(path).unwrap() == want,
        "ext4-view read {path} differs"
    );
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] ^ seed)
        .collect()
}

#[test]
fn superblock_checksum_is_raw_crc32c() {
    let raw = std::fs::read(fx().join("ext4.img")).unwrap();
    let sb = &raw[1024..2048];
    let stored = u32::from_le_bytes(sb[0x3FC..0x400].try_into().unwrap());
    assert_eq!(crc32c_raw(!0, &sb[..0x3FC]), stored);
    let w = Ext4Writer::open(Box::new(FileDevice::open(&fx().join("ext4.img")).unwrap())).unwrap();
    assert!(w.superblock().metadata_csum && w.superblock().is_64bit && w.superblock().flex_bg);
}

#[test]
fn name_hashes_match_debugfs() {
    let seed_str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
    let hex: Vec<u8> = seed_str
        .replace('-', "")
        .as_bytes()
        .chunks(2)
        .map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 16).unwrap())
        .collect();
    let seed: [u32; 4] =
        std::array::from_fn(|i| u32::from_le_bytes(hex[i * 4..i * 4 + 4].try_into().unwrap()));
    let names = [
        "a",
        "hostname",
        "entry-with-a-longish-name-0042",
        "caf\u{e9}-\u{fc}ber",
        &"x".repeat(70),
    ];
    for (alg, version, unsigned) in [
        // debugfs knows the unsigned variants only by number (3, 4, 5).
        ("half_md4", 1, false),
        ("4", 1, true),
        ("tea", 2, false),
        ("5", 2, true),
        ("legacy", 0, false),
        ("3", 0, true),
    ] {
        for name in names {
            let out = tool_ok(
                "debugfs",
                &["-R", &format!("dx_hash -h {alg} -s {seed_str} {name}")],
            );
            let text = String::from_utf8_lossy(&out.stdout);
            let hex = text
                .split("is 0x")
                .nth(1)
                .unwrap_or_else(|| panic!("debugfs said {text}"));
            let want = u32::from_str_radix(&hex[..8], 16).unwrap();
            let got = name_hash(version, name.as_bytes(), seed, unsigned).unwrap();
            assert_eq!(got, want, "{alg} of {name:?}");
        }
    }
}

/// Frees single blocks here and there so a large write gets many extents.
fn fragment(w: &mut Ext4Writer) {
    for i in 0..12 {
        w.create_file("/", &format!("frag{i}"), 0o644, 0, 0, &[b'f'; 10])
            .unwrap();
    }
    for i in (0..12).step_by(2) {
        w.unlink(&format!("/frag{i}")).unwrap();
    }
}

fn grow_and_shrink(name: &str, big: usize) {
    let (_d, img) = copy(name);
    let mut w = open(&img);
    assert_eq!(
        w.read_file(w.lookup("/etc/hostname").unwrap()).unwrap(),
        b"debian-vm\n"
    );
    fragment(&mut w);
    fsck(&img, "fragmenting");
    let data = pattern(big, 7);
    w.write_file("/etc/hostname", &data).unwrap();
    fsck(&img, "growing");
    assert_content(&img, "/etc/hostname", &data);
    let ex = String::from_utf8_lossy(&debugfs(&img, "ex /etc/hostname")).into_owned();
    assert!(
        ex.lines().filter(|l| l.contains(" - ")).count() > 4,
        "expected many extents:\n{ex}"
    );
    let st = dstat(&img, "/etc/hostname");
    assert!(st.contains(&format!("Size: {big}")), "{st}");
    w.write_file("/etc/hostname", b"short\n").unwrap();
    fsck(&img, "shrinking");
    assert_content(&img, "/etc/hostname", b"short\n");
    w.write_file("/etc/hostname", b"").unwrap();
    fsck(&img, "emptying");
    assert_content(&img, "/etc/hostname", b"");
}

#[test]
fn grow_and_shrink_metadata_csum() {
    grow_and_shrink("ext4.img", 3 << 20);
}

#[test]
fn grow_and_shrink_gdt_csum() {
    grow_and_shrink("nocsum.img", 3 << 20);
}

#[test]
fn grow_and_shrink_1k_blocks() {
    grow_and_shrink("k1.img", 3 << 20);
}

fn uninit_groups(img: &Path) -> usize {
    let out = tool_ok("dumpe2fs", &[img.to_str().unwrap()]);
    String::from_utf8_lossy(&out.stdout)
        .matches("BLOCK_UNINIT")
        .count()
}

#[test]
fn large_write_initialises_block_uninit_groups() {
    let (_d, img) = copy("small-bg.img");
    let before = uninit_groups(&img);
    assert!(before > 4, "fixture should have BLOCK_UNINIT groups");
    let mut w = open(&img);
    let data = pattern(24 << 20, 3);
    w.write_file("/etc/hostname", &data).unwrap();
    fsck(&img, "24 MiB write over uninit groups");
    assert!(uninit_groups(&img) < before);
    assert_content(&img, "/etc/hostname", &data);
    w.write_file("/etc/hostname", b"x").unwrap();
    fsck(&img, "shrink");
}

fn create_everywhere(name: &str) {
    let (_d, img) = copy(name);
    let mut w = open(&img);
    w.create_file("/", "rootfile", 0o600, 1000, 100, b"in the root\n")
        .unwrap();
    fsck(&img, "create in /");
    w.create_file("/lin", "new", 0o644, 0, 0, &pattern(5000, 1))
        .unwrap();
    fsck(&img, "create in /lin");
    w.create_file("/big", "zz-new-entry-in-the-htree", 0o644, 0, 0, b"hashed\n")
        .unwrap();
    fsck(&img, "create in the htree /big");
    assert_content(&img, "/rootfile", b"in the root\n");
    assert_content(&img, "/lin/new", &pattern(5000, 1));
    assert_content(&img, "/big/zz-new-entry-in-the-htree", b"hashed\n");
    let st = dstat(&img, "/rootfile");
    assert!(
        st.contains("Mode:  0600") && st.contains("User:  1000") && st.contains("Group:   100"),
        "{st}"
    );
    assert!(
        w.create_file("/", "rootfile", 0o600, 0, 0, b"").is_err(),
        "duplicate name"
    );
    // Enough new names to fill a linear directory block and grow it.
    for i in 0..200 {
        w.create_file("/lin", &format!("many-{i:03}"), 0o644, 0, 0, b"")
            .unwrap();
    }
    fsck(&img, "200 creates in /lin");
    let v = view(&img);
    let n = v.read_dir("/lin").unwrap().count();
    assert_eq!(n, 2 + 5 + 1 + 200);
    assert_eq!(w.read_dir("/lin").unwrap().len(), 5 + 1 + 200);
}

#[test]
fn create_metadata_csum() {
    create_everywhere("ext4.img");
}

#[test]
fn create_gdt_csum() {
    create_everywhere("nocsum.img");
}

#[test]
fn mkdir_symlink_unlink_rename_chmod() {
    let (_d, img) = copy("ext4.img");
    let mut w = open(&img);
    w.mkdir("/", "opt", 0o755, 0, 0).unwrap();
    fsck(&img, "mkdir /opt");
    w.mkdir("/opt", "sub", 0o700, 0, 0).unwrap();
    fsck(&img, "mkdir /opt/sub");
    w.create_file("/opt/sub", "f", 0o644, 0, 0, b"deep\n").unwrap();
    fsck(&img, "create /opt/sub/f");
    assert_content(&img, "/opt/sub/f", b"deep\n");
    assert_eq!(w.stat(w.lookup("/opt").unwrap()).unwrap().links, 3);

    w.symlink("/", "fast", "etc/hostname", 0, 0).unwrap();
    fsck(&img, "fast symlink");
    let long = format!("/{}", "d/".repeat(60)) + "target";
    w.symlink("/opt", "slow", &long, 0, 0).unwrap();
    fsck(&img, "slow symlink");
    let v = view(&img);
    assert_eq!(v.read_link("/fast").unwrap().to_str().unwrap(), "etc/hostname");
    assert_eq!(v.read_link("/opt/slow").unwrap().to_str().unwrap(), long);
    assert_eq!(v.read("/fast").unwrap(), b"debian-vm\n");
    assert!(dstat(&img, "/fast").contains("Fast link dest: \"etc/hostname\""));

    w.unlink("/lin/f1").unwrap();
    fsck(&img, "unlink /lin/f1");
    assert!(matches!(w.lookup("/lin/f1"), Err(Error::NotFound(_))));
    w.unlink("/opt/slow").unwrap();
    w.unlink("/fast").unwrap();
    fsck(&img, "unlink symlinks");
    assert!(w.unlink("/opt").is_err(), "directories are refused");

    w.rename("/lin/f2", "/lin/f2-renamed").unwrap();
    fsck(&img, "rename in one dir");
    w.rename("/lin/f3", "/opt/sub/f3").unwrap();
    fsck(&img, "rename across dirs");
    w.rename("/lin/f4", "/opt/sub/f").unwrap();
    fsck(&img, "rename over a file");
    assert_content(&img, "/opt/sub/f", b"file 4\n");
    w.rename("/opt/sub", "/lin/sub").unwrap();
    fsck(&img, "rename a directory across parents");
    assert_content(&img, "/lin/sub/f3", b"file 3\n");
    assert_eq!(w.stat(w.lookup("/opt").unwrap()).unwrap().links, 2);
    assert!(
        w.rename("/lin", "/lin/sub/x").is_err(),
        "moving a dir into itself"
    );

    w.chmod("/lin/f2-renamed", 0o4751).unwrap();
    w.chown("/lin/f2-renamed", 1234, 5678).unwrap();
    fsck(&img, "chmod/chown");
    let st = dstat(&img, "/lin/f2-renamed");
    assert!(
        st.contains("Mode:  04751") && st.contains("User:  1234") && st.contains("Group:  5678"),
        "{st}"
    );
    let s = w.stat(w.lookup("/lin/f2-renamed").unwrap()).unwrap();
    assert_eq!(
        (s.kind, s.perm, s.uid, s.gid),
        (FileKind::File, 0o4751, 1234, 5678)
    );
}

#[test]
fn ext3_reads_but_refuses_block_mapped_writes() {
    let (_d, img) = copy("ext3.img");
    let mut w = open(&img);
    assert_eq!(
        w.read_file(w.lookup("/etc/hostname").unwrap()).unwrap(),
        b"debian-vm\n"
    );
    assert!(matches!(
        w.write_file("/etc/hostname", b"x"),
        Err(Error::Unsupported(_))
    ));
    assert!(matches!(
        w.create_file("/", "n", 0o644, 0, 0, b"x"),
        Err(Error::Unsupported(_))
    ));
    // Renaming within a block-mapped directory needs no new blocks.
    w.chmod("/etc/hostname", 0o600).unwrap();
    fsck(&img, "chmod on ext3");
}

#[test]
fn edits_a_partition_through_the_overlay() {
    let disk = fx().join("disk.img");
    let before = common::sha256_file(&disk);
    let src: Arc<dyn BlockSource> = Arc::from(v2x_formats::open_image(&disk, &Default::default()).unwrap());
    let overlay = Arc::new(Overlay::new(src));
    let part = OverlayRange::new(overlay.clone(), 1 << 20, 64 << 20).unwrap();
    let mut w = Ext4Writer::open(Box::new(part)).unwrap();
    let data = pattern(1 << 20, 9);
    w.write_file("/etc/hostname", &data).unwrap();
    w.create_file("/etc", "added", 0o644, 0, 0, b"via overlay\n")
        .unwrap();
    drop(w);
    let dir = scratch("ext4w-overlay");
    let out = dir.path().join("part.img");
    let mut buf = vec![0u8; 64 << 20];
    overlay.read_at(1 << 20, &mut buf).unwrap();
    std::fs::write(&out, &buf).unwrap();
    fsck(&out, "edits through the overlay");
    assert_content(&out, "/etc/hostname", &data);
    assert_content(&out, "/etc/added", b"via overlay\n");
    assert_eq!(
        common::sha256_file(&disk),
        before,
        "the source disk must not change"
    );
}

/// Sets superblock field bits in a copy (re-sealing the checksum) and
/// expects `open` to refuse with `Unsupported` mentioning `word`.
fn refuses(off: usize, bits: u32, word: &str) {
    let (_d, img) = copy("ext4.img");
    let mut raw = std::fs::read(&img).unwrap();
    let sb = &mut raw[1024..2048];
    let v = u32::from_le_bytes(sb[off..off + 4].try_into().unwrap()) | bits;
    sb[off..off + 4].copy_from_slice(&v.to_le_bytes());
    let c = crc32c_raw(!0, &sb[..0x3FC]);
    sb[0x3FC..0x400].copy_from_slice(&c.to_le_bytes());
    std::fs::write(&img, &raw).unwrap();
    match Ext4Writer::open(Box::new(FileDevice::open(&img).unwrap())) {
        Err(Error::Unsupported(m)) => assert!(m.contains(word), "{word}: {m}"),
        Err(e) => panic!("{word}: wrong error {e}"),
        Ok(_) => panic!("{word}: accepted"),
    }
    assert_eq!(std::fs::read(&img).unwrap(), raw, "nothing may be written");
}

#[test]
fn refuses_unsafe_features() {
    refuses(0x60, 0x4, "journal needs recovery");
    refuses(0x60, 0x8000, "inline_data");
    refuses(0x60, 0x10000, "encrypt");
    refuses(0x60, 0x20000, "casefold");
    refuses(0x60, 0x10, "meta_bg");
    refuses(0x60, 0x1, "compression");
    refuses(0x60, 0x8, "journal_dev");
    refuses(0x60, 0x100, "mmp");
    refuses(0x64, 0x200, "bigalloc");
    refuses(0x64, 0x8000, "verity");
    refuses(0x64, 0x80, "has_snapshot");
    refuses(0x64, 0x100, "quota");
    refuses(0x38, 0x2 << 16, "errors state");
}

#[test]
fn caps_are_enforced() {
    // Group count: a 2^40-block filesystem would need 2^25 groups.
    let (_d, img) = copy("ext4.img");
    let mut raw = std::fs::read(&img).unwrap();
    let sb = &mut raw[1024..2048];
    sb[0x150..0x154].copy_from_slice(&256u32.to_le_bytes());
    let c = crc32c_raw(!0, &sb[..0x3FC]);
    sb[0x3FC..0x400].copy_from_slice(&c.to_le_bytes());
    std::fs::write(&img, &raw).unwrap();
    let r = Ext4Writer::open(Box::new(FileDevice::open(&img).unwrap()));
    assert!(matches!(
        r,
        Err(Error::LimitExceeded {
            what: "ext4 block group count",
            ..
        })
    ));

    // Directory size: a /lin claiming 2^40 bytes.
    let (_d2, img) = copy("ext4.img");
    tool_ok(
        "debugfs",
        &["-w", "-R", "sif /lin size 0x10000000000", img.to_str().unwrap()],
    );
    let w = open(&img);
    let r = w.lookup("/lin/f1");
    assert!(
        matches!(
            r,
            Err(Error::LimitExceeded {
                what: "directory size in blocks",
                ..
            })
        ),
        "{r:?}"
    );

    // File size: reading a file that claims 1.25 GiB.
    let (_d3, img3) = copy("ext4.img");
    tool_ok(
        "debugfs",
        &[
            "-w",
            "-R",
            "sif /etc/hostname size 0x50000000",
            img3.to_str().unwrap(),
        ],
    );
    let w3 = open(&img3);
    let r = w3.read_file(w3.lookup("/etc/hostname").unwrap());
    assert!(
        matches!(
            r,
            Err(Error::LimitExceeded {
                what: "file size",
                ..
            })
        ),
        "{r:?}"
    );

    // Path depth.
    let deep = "/a".repeat(300);
    assert!(matches!(
        w.lookup(&deep),
        Err(Error::LimitExceeded {
            what: "path depth",
            ..
        })
    ));
}

#[test]
fn fuzz_seeds_are_filesystems_and_their_edits_are_clean() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/ext4w");
    let scratch_dir = scratch("ext4w-fuzz-seeds");
    for name in ["ext4", "ext4nocsum"] {
        let seed = std::fs::read(dir.join(name)).unwrap();
        let edited = v2x::fs::ext4w::fuzz_edit(&seed).expect("seed opens");
        let img = scratch_dir.path().join(name);
        std::fs::write(&img, &edited).unwrap();
        fsck(&img, &format!("the fuzz edit sequence on seed {name}"));
        assert_eq!(dcat(&img, "/dir/d/x"), b"x\n");
        let st = dstat(&img, "/dir/fast");
        assert!(st.contains("Fast link dest: \"target\""), "{st}");
        let v = view(&img);
        assert_eq!(v.read_link("/slow").unwrap().to_str().unwrap(), "s".repeat(100));
        assert!(v.exists("/dir/renamed").is_ok_and(|e| !e), "unlinked");
    }
}

/// Inserts 600 names into /big. Leaf splits must happen and stay clean, and
/// so must splits of the fixture's full first interior index node.
fn htree_splits(name: &str) {
    let (_d, img) = copy(name);
    let mut w = open(&img);
    let size_before = w.stat(w.lookup("/big").unwrap()).unwrap().size;
    let mut added = 0;
    let mut refused = 0;
    for i in 0..600 {
        let n = format!("split-me-{i:04}-with-a-long-enough-name-to-fill-leaves");
        match w.create_file("/big", &n, 0o644, 0, 0, b"") {
            Ok(_) => added += 1,
            Err(Error::Unsupported(m)) => {
                assert!(m.contains("index node"), "{m}");
                refused += 1;
                assert!(matches!(w.lookup(&format!("/big/{n}")), Err(Error::NotFound(_))));
            }
            Err(e) => panic!("{e}"),
        }
        if i % 150 == 149 {
            fsck(&img, &format!("{} htree inserts", i + 1));
        }
    }
    let size_after = w.stat(w.lookup("/big").unwrap()).unwrap().size;
    assert!(size_after > size_before, "leaves were split (directory grew)");
    assert_eq!(refused, 0, "index nodes split too");
    let v = view(&img);
    assert_eq!(v.read_dir("/big").unwrap().count(), 2 + 3000 + added);
    assert_eq!(w.read_dir("/big").unwrap().len(), 3000 + added);
    assert_eq!(dcat(&img, "/big/entry-with-a-longish-name-1234"), b"1234\n");
}

#[test]
fn htree_leaf_splits_metadata_csum() {
    htree_splits("ext4.img");
}

#[test]
fn htree_leaf_splits_gdt_csum() {
    htree_splits("nocsum.img");
}
