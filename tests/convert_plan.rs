//! The Linux edit plan on a generated guest image: device names become
//! UUIDs in fstab and grub.cfg, read through the real volume and ext4 layers.

mod common;

use std::sync::Arc;
use v2x::convert::linux::device_names_step;
use v2x::convert::plan::Edit;
use v2x::fs::guest::GuestRoot;
use v2x::guest::inspect::{Disk, Storage};

#[test]
fn mbr_guest_device_names_become_uuids() {
    let dir = common::fixtures("gen-guests.sh");
    let path = dir.join("mbr-ext4.img");
    let src = v2x_formats::open_image(&path, &v2x_formats::OpenOptions::default()).unwrap();
    let storage = Storage::open(vec![Disk {
        path: path.display().to_string(),
        format: "raw".into(),
        source: Arc::from(src),
    }])
    .unwrap();
    let root = storage.filesystems[0].clone().expect("sda1 holds ext4");
    let tree = GuestRoot::new(root, "sda1");
    let step = device_names_step(&storage, &tree).unwrap();
    let uuid = "UUID=3f0e2b1a-7c55-4d2e-9a61-0c1d2e3f4a5b";
    let text = |p: &str| {
        step.edits
            .iter()
            .find_map(|e| match e {
                Edit::WriteFile { path, new, .. } if path == p => {
                    Some(String::from_utf8(new.clone()).unwrap())
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("no edit of {p}: {step:?}"))
    };
    assert!(
        text("/etc/fstab").starts_with(&format!("{uuid} / ext4")),
        "{}",
        text("/etc/fstab")
    );
    let grub = text("/boot/grub/grub.cfg");
    assert!(grub.contains(&format!("root={uuid} ro quiet")), "{grub}");
    assert!(!grub.contains("/dev/sda1"), "{grub}");
    assert_eq!(step.edits.len(), 2, "{:?}", step.notes);
}
