//! Slow tier: boots the real Debian 12 "VMware" guest made by
//! testdata/gen-debian-guest.sh under QEMU (TCG) with testdata/boot-test.sh.
//!
//! Runs only with `V2X_SLOW_TESTS=1` (needs root, the Debian mirror and
//! qemu-system-x86; a boot takes minutes). With the variable set, anything
//! missing fails the test: the generator and the harness exit non-zero.
//! These tests pin the baseline a conversion must change: the unconverted
//! guest boots on SATA and cannot find its root disk on virtio.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Mutex, OnceLock};

/// Two TCG boots at once on a small CI machine only make both slower.
static ONE_BOOT_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Whether the slow tier was asked for (`V2X_SLOW_TESTS=1`).
fn enabled() -> bool {
    common::slow_tier()
}

/// The generated guest disks (built once per generator version).
fn guest_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| common::fixtures("gen-debian-guest.sh"))
}

/// Runs testdata/boot-test.sh on `image`; the guard serialises boots.
fn boot(image: &str, format: &str, bus: &str) -> Output {
    let _guard = ONE_BOOT_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/boot-test.sh");
    let image = guest_dir().join(image);
    common::tool(
        "bash",
        &[
            script.to_str().unwrap(),
            image.to_str().unwrap(),
            format,
            bus,
            "1500",
        ],
    )
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn raw_guest_boots_on_sata() {
    if !enabled() {
        return;
    }
    let out = boot("guest.raw", "raw", "sata");
    assert!(out.status.success(), "boot failed:\n{}", text(&out));
    assert!(text(&out).contains("V2X-BOOT-OK vmguest"), "{}", text(&out));
}

#[test]
fn stream_vmdk_guest_boots_on_sata() {
    if !enabled() {
        return;
    }
    let out = boot("guest-stream.vmdk", "vmdk", "sata");
    assert!(out.status.success(), "boot failed:\n{}", text(&out));
}

#[test]
fn unconverted_guest_cannot_find_root_on_virtio() {
    if !enabled() {
        return;
    }
    let out = boot("guest.raw", "raw", "virtio");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("Gave up waiting for root file system device"),
        "expected the initramfs to give up on the root device:\n{}",
        text(&out)
    );
}
