//! kmod binary indexes written by v2x, queried with the real `modprobe`
//! (package kmod) as the oracle.

mod common;

use common::{scratch, tool, tool_ok};
use v2x::convert::kmod_index::{alias_index, dep_index};

const KVER: &str = "6.1.0-18-amd64";
const DEP: &str = "kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz
kernel/drivers/virtio/virtio.ko.xz:
kernel/drivers/virtio/virtio_ring.ko.xz:
kernel/drivers/net/virtio_net.ko.xz: kernel/net/core/net_failover.ko.xz kernel/net/core/failover.ko.xz kernel/drivers/virtio/virtio.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz
kernel/net/core/net_failover.ko.xz: kernel/net/core/failover.ko.xz
kernel/net/core/failover.ko.xz:
kernel/drivers/scsi/vmw_pvscsi.ko.xz:
kernel/drivers/virtio/virtio_pci.ko.xz: kernel/drivers/virtio/virtio_pci_modern_dev.ko.xz kernel/drivers/virtio/virtio.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz
kernel/drivers/virtio/virtio_pci_modern_dev.ko.xz:
kernel/fs/ext4/ext4.ko.xz: kernel/fs/jbd2/jbd2.ko.xz
kernel/fs/jbd2/jbd2.ko.xz:
kernel/drivers/md/dm-mod.ko.xz:
kernel/drivers/scsi/sd_mod.ko.xz:
";
const ALIAS: &str = "# Aliases extracted from modules themselves.
alias virtio:d00000002v* virtio_blk
alias virtio:d00000001v* virtio_net
alias pci:v000015ADd000007C0sv*sd*bc*sc*i* vmw_pvscsi
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias fs-ext4 ext4
alias char-major-10-236 dm_mod
alias devname:mapper/control dm_mod
alias scsi:t-0x0[0-9a-e]* sd_mod
";

fn modprobe(root: &std::path::Path, args: &[&str]) -> String {
    let mut full = vec!["-d", root.to_str().unwrap(), "-S", KVER];
    full.extend_from_slice(args);
    let out = tool("modprobe", &full);
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn modprobe_reads_our_dep_and_alias_indexes() {
    let dir = scratch("kmod-index");
    let m = dir.path().join("lib/modules").join(KVER);
    std::fs::create_dir_all(&m).unwrap();
    // Keep everything but vmw_pvscsi, as an initramfs index for virtio would.
    let keep = |name: &str| name != "vmw_pvscsi";
    std::fs::write(m.join("modules.dep.bin"), dep_index(DEP, &keep).unwrap()).unwrap();
    std::fs::write(m.join("modules.alias.bin"), alias_index(ALIAS, &keep).unwrap()).unwrap();
    // modprobe checks that each module file exists.
    for line in DEP.lines() {
        let path = line.split(':').next().unwrap();
        let f = m.join(path);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, b"").unwrap();
    }
    tool_ok("modprobe", &["--version"]);

    let deps = modprobe(dir.path(), &["--show-depends", "virtio_net"]);
    for want in [
        "virtio.ko.xz",
        "virtio_ring.ko.xz",
        "failover.ko.xz",
        "net_failover.ko.xz",
        "virtio_net.ko.xz",
    ] {
        assert!(
            deps.contains(want),
            "modprobe --show-depends virtio_net said:\n{deps}"
        );
    }
    // Dependencies come before the module itself.
    assert!(
        deps.find("failover.ko.xz").unwrap() < deps.find("virtio_net.ko.xz").unwrap(),
        "{deps}"
    );

    let r = modprobe(dir.path(), &["-R", "virtio:d00000002v00001AF4"]);
    assert_eq!(r.trim(), "virtio_blk", "alias lookup said: {r}");
    let r = modprobe(
        dir.path(),
        &["-R", "pci:v00001AF4d00001042sv00001AF4sd00001100bc01sc00i00"],
    );
    assert_eq!(r.trim(), "virtio_pci", "wildcard alias lookup said: {r}");
    // Filtered modules are gone from both indexes.
    let r = modprobe(
        dir.path(),
        &["-R", "pci:v000015ADd000007C0sv000015ADsd000007C0bc01sc07i00"],
    );
    assert!(!r.contains("vmw_pvscsi"), "{r}");
    let d = modprobe(dir.path(), &["--show-depends", "vmw_pvscsi"]);
    assert!(!d.contains("insmod"), "{d}");

    // Aliases with dashes: modprobe looks them up with `-` as `_` (outside
    // bracket classes), so the index must hold them that way. The kernel
    // asks for `fs-ext4` when it mounts ext4.
    for (alias, module) in [
        ("fs-ext4", "ext4"),
        ("char-major-10-236", "dm_mod"),
        ("devname:mapper/control", "dm_mod"),
        ("scsi:t-0x05", "sd_mod"),
    ] {
        let r = modprobe(dir.path(), &["-R", alias]);
        assert_eq!(r.trim(), module, "modprobe -R {alias} said: {r}");
    }
    let d = modprobe(dir.path(), &["--show-depends", "fs-ext4"]);
    assert!(
        d.find("jbd2.ko.xz").unwrap() < d.find("ext4.ko.xz").unwrap(),
        "{d}"
    );
}
