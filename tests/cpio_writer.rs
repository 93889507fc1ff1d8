//! The newc archives v2x appends to initramfs files, checked with GNU cpio.

mod common;

use common::{scratch, tool_ok};
use std::process::{Command, Stdio};
use v2x::convert::cpio::{append_padding, ArchiveTree, CpioWriter, Node};

#[test]
fn gnu_cpio_lists_and_extracts_our_archive() {
    let mut orig = ArchiveTree::new();
    orig.insert("usr", Node::Dir);
    orig.insert("usr/lib", Node::Dir);
    orig.insert("lib", Node::Symlink("usr/lib".into()));
    let mut w = CpioWriter::new(1_700_000_000);
    let big: Vec<u8> = (0..100_003u32).map(|i| (i % 251) as u8).collect();
    let p = orig
        .real_path("lib/modules/6.1.0-18-amd64/kernel/drivers/block/virtio_blk.ko")
        .unwrap();
    w.file(&p, 0o644, &big, &orig).unwrap();
    w.file("etc/modules-load.d/v2x.conf", 0o644, b"virtio_blk\n", &orig)
        .unwrap();
    let archive = w.finish();
    assert_eq!(archive.len() % 512, 0);

    let dir = scratch("cpio-writer");
    let a = dir.path().join("a.cpio");
    std::fs::write(&a, &archive).unwrap();
    let list = tool_ok("cpio", &["-it", "-F", a.to_str().unwrap()]);
    let names = String::from_utf8(list.stdout).unwrap();
    let names: Vec<&str> = names.lines().collect();
    assert!(
        names.contains(&"usr/lib/modules/6.1.0-18-amd64/kernel/drivers/block/virtio_blk.ko"),
        "{names:?}"
    );
    assert!(
        !names.contains(&"lib"),
        "a directory entry would replace the lib symlink: {names:?}"
    );
    assert!(
        !names.contains(&"usr"),
        "usr exists in the original and must not be re-emitted: {names:?}"
    );

    let x = dir.path().join("x");
    std::fs::create_dir(&x).unwrap();
    let st = Command::new("cpio")
        .args(["-idm", "--quiet", "-F", a.to_str().unwrap()])
        .current_dir(&x)
        .stdout(Stdio::null())
        .status()
        .expect("cpio runs");
    assert!(st.success());
    let got =
        std::fs::read(x.join("usr/lib/modules/6.1.0-18-amd64/kernel/drivers/block/virtio_blk.ko")).unwrap();
    assert!(got == big);
    assert_eq!(
        std::fs::read(x.join("etc/modules-load.d/v2x.conf")).unwrap(),
        b"virtio_blk\n"
    );
    assert_eq!(append_padding(archive.len() as u64 + 3), 1);
}
