//! Linux guest inspection: the initramfs reader against real cpio, gzip, xz,
//! lzma, zstd and lz4 output (testdata/gen-initramfs.sh, oracle `cpio -it`),
//! and whole-guest inspection of in-memory guests shaped like real distros.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use v2x::fs::guest::GuestRoot;
use v2x::fs::memfs::MemFs;
use v2x::guest::initramfs::{self, decompress::Compression};
use v2x::guest::linux::{self, fstab::DeviceSpec};
use v2x_formats::Error;

fn fx() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| common::fixtures("gen-initramfs.sh"))
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fx().join(name)).unwrap()
}

/// `cpio -it` of the archive a shell pipeline writes to stdout.
fn oracle(pipeline: &str) -> Vec<String> {
    let out = common::tool_ok(
        "sh",
        &[
            "-c",
            &format!("cd '{}' && {pipeline} | cpio -it --quiet", fx().display()),
        ],
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Our names, with the leading "./" that GNU cpio strips when listing.
fn ours(img: &[u8]) -> Vec<String> {
    initramfs::list(&img)
        .unwrap()
        .entries
        .iter()
        .map(|e| match e.name.strip_prefix("./") {
            Some(rest) => rest.to_string(),
            None => e.name.clone(),
        })
        .collect()
}

#[test]
fn every_compression_lists_like_cpio() {
    let main = oracle("cat main.cpio");
    assert!(main.contains(&"usr/bin/big".to_string()), "{main:?}");
    for (file, cmd) in [
        ("main.cpio", "cat main.cpio"),
        ("main-crc.cpio", "cat main-crc.cpio"),
        ("main.gz", "gzip -dc main.gz"),
        ("main.xz", "xz -dc main.xz"),
        ("main.lzma", "xz --format=lzma -dc main.lzma"),
        ("main.zst", "zstd -qdc main.zst"),
        ("main.lz4", "lz4 -qdc main.lz4"),
    ] {
        assert_eq!(ours(&read(file)), oracle(cmd), "{file}");
    }
}

#[test]
fn concatenated_segments_list_like_cpio() {
    let early = oracle("cat early.cpio");
    let second = oracle("cat second.cpio");
    let main = oracle("cat main.cpio");
    let cat = |a: &[String], b: &[String]| [a, b].concat();
    type Case<'a> = (&'a str, Vec<String>, &'a [Option<Compression>]);
    let cases: &[Case] = &[
        (
            "initrd-early-gz.img",
            cat(&early, &main),
            &[None, Some(Compression::Gzip)],
        ),
        (
            "initrd-early-zst.img",
            cat(&early, &main),
            &[None, Some(Compression::Zstd)],
        ),
        (
            "initrd-early-xz.img",
            cat(&early, &main),
            &[None, Some(Compression::Xz)],
        ),
        (
            "initrd-early-lz4.img",
            cat(&early, &main),
            &[None, Some(Compression::Lz4)],
        ),
        (
            "initrd-gz-pad-xz.img",
            cat(&main, &second),
            &[Some(Compression::Gzip), Some(Compression::Xz)],
        ),
        (
            "initrd-zst-gz.img",
            cat(&main, &second),
            &[Some(Compression::Zstd), Some(Compression::Gzip)],
        ),
        (
            "initrd-lzma-gz.img",
            cat(&main, &second),
            &[Some(Compression::Lzma), Some(Compression::Gzip)],
        ),
        ("initrd-zst-2frames.img", main.clone(), &[Some(Compression::Zstd)]),
        (
            "initrd-xz-gz.img",
            cat(&main, &second),
            &[Some(Compression::Xz), Some(Compression::Gzip)],
        ),
    ];
    for (file, want, kinds) in cases {
        let img = read(file);
        assert_eq!(&ours(&img), want, "{file}");
        let l = initramfs::list(&img).unwrap();
        let got: Vec<_> = l.segments.iter().map(|s| s.compression).collect();
        assert_eq!(&got, kinds, "{file}");
    }
}

#[test]
fn file_contents_match_the_tree() {
    let tree = fx().join("tree");
    for file in [
        "initrd-early-gz.img",
        "initrd-early-xz.img",
        "initrd-zst-gz.img",
        "initrd-early-lz4.img",
        "main-crc.cpio",
    ] {
        let img = read(file);
        let big = initramfs::read_file(&img, "/usr/bin/big").unwrap().unwrap();
        assert_eq!(big, std::fs::read(tree.join("usr/bin/big")).unwrap(), "{file}");
        let init = initramfs::read_file(&img, "init").unwrap().unwrap();
        assert_eq!(init, std::fs::read(tree.join("init")).unwrap());
        assert_eq!(
            initramfs::read_file(&img, "/bin").unwrap(),
            None,
            "symlink is not a file"
        );
    }
    let img = read("initrd-gz-pad-xz.img");
    assert_eq!(
        initramfs::read_file(&img, "/etc/late.conf").unwrap().unwrap(),
        b"from the second segment\n"
    );
    let img = read("initrd-early-gz.img");
    assert_eq!(
        initramfs::read_file(&img, "kernel/x86/microcode/GenuineIntel.bin")
            .unwrap()
            .unwrap(),
        b"microcode blob\n"
    );
}

#[test]
fn bzip2_is_unsupported_and_damage_is_corrupt() {
    assert!(matches!(
        initramfs::list(&read("initrd-early-bz2.img")),
        Err(Error::Unsupported(_))
    ));
    // Flip a byte inside the xz stream: the decoder or its CRC32 catches it.
    let mut img = read("initrd-early-xz.img");
    let at = 1024 + 200;
    img[at] ^= 0x55;
    assert!(matches!(initramfs::list(&img), Err(Error::Corrupt { .. })));
    // Truncated zstd.
    let img = read("initrd-early-zst.img");
    let cut = &img[..img.len() - 100];
    assert!(matches!(initramfs::list(&cut), Err(Error::Corrupt { .. })));
}

#[test]
fn host_initramfs_if_any_lists_without_error() {
    // Extra coverage on machines that have a real initramfs; the fixtures above are the real test.
    let Ok(dir) = std::fs::read_dir("/boot") else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("initrd.img-") || name.starts_with("initramfs-")) {
            continue;
        }
        let Ok(img) = std::fs::read(e.path()) else {
            continue;
        };
        let l = initramfs::list(&img).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!l.entries.is_empty(), "{name}");
    }
}

// ---- whole guests -------------------------------------------------------

fn elf(machine: u16) -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 2;
    h[5] = 1;
    h[18..20].copy_from_slice(&machine.to_le_bytes());
    h
}

/// An x86 bzImage header whose kernel_version string is `v`.
fn bzimage(v: &str) -> Vec<u8> {
    let mut k = vec![0u8; 0x400];
    k[0x202..0x206].copy_from_slice(b"HdrS");
    k[0x20e..0x210].copy_from_slice(&0x100u16.to_le_bytes());
    k[0x300..0x300 + v.len()].copy_from_slice(v.as_bytes());
    k
}

fn debian12() -> GuestRoot {
    let mut fs = MemFs::new();
    fs.file("/etc/os-release", b"PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\n");
    fs.file("/etc/debian_version", b"12.5\n");
    fs.file("/etc/hostname", b"deb12\n");
    fs.symlink("/bin", "usr/bin");
    fs.symlink("/lib", "usr/lib");
    fs.symlink("/usr/bin/sh", "dash");
    fs.file("/usr/bin/dash", &elf(62));
    fs.file("/etc/fstab", b"# <file system> <mount point> <type> <options> <dump> <pass>\nUUID=0d9a-root / ext4 errors=remount-ro 0 1\nUUID=ABCD-EF01 /boot/efi vfat umask=0077 0 1\n/swapfile none swap sw 0 0\n");
    fs.file("/boot/vmlinuz-6.1.0-18-amd64", &bzimage("6.1.0-18-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)"));
    fs.file("/boot/initrd.img-6.1.0-18-amd64", &read("initrd-early-gz.img"));
    let m = "/usr/lib/modules/6.1.0-18-amd64";
    fs.file(
        &format!("{m}/modules.builtin"),
        b"kernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio_pci.ko\n",
    );
    fs.file(&format!("{m}/modules.dep"), b"kernel/drivers/block/virtio_blk.ko:\nkernel/drivers/scsi/virtio_scsi.ko:\nkernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko\nkernel/drivers/net/net_failover.ko:\n");
    fs.file(
        "/boot/grub/grub.cfg",
        br#"
set default="0"
if [ x"${feature_menuentry_id}" = xy ]; then
  menuentry_id_option="--id"
fi
menuentry 'Debian GNU/Linux' --class debian $menuentry_id_option 'gnulinux-simple-0d9a' {
	linux	/boot/vmlinuz-6.1.0-18-amd64 root=UUID=0d9a-root ro  quiet
	initrd	/boot/initrd.img-6.1.0-18-amd64
}
submenu 'Advanced options for Debian GNU/Linux' $menuentry_id_option 'gnulinux-advanced-0d9a' {
	menuentry 'Debian GNU/Linux, with Linux 6.1.0-18-amd64 (recovery mode)' {
		linux	/boot/vmlinuz-6.1.0-18-amd64 root=UUID=0d9a-root ro single
	}
}
"#,
    );
    fs.dir("/boot/grub/x86_64-efi");
    fs.file(
        "/etc/default/grub",
        b"GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\n",
    );
    fs.file("/var/lib/dpkg/status", b"Package: bash\nStatus: install ok installed\nVersion: 5.2.15-2+b2\n\nPackage: grub-efi-amd64\nStatus: install ok installed\nVersion: 2.06-13\n\nPackage: open-vm-tools\nStatus: install ok installed\nVersion: 2:12.2.0-1+deb12u1\n");
    fs.dir("/etc/apt");
    fs.file("/usr/bin/vmtoolsd", &elf(62));
    fs.file("/usr/lib/systemd/system/open-vm-tools.service", b"[Unit]\n");
    fs.file("/etc/network/interfaces", b"source /etc/network/interfaces.d/*\nauto lo\niface lo inet loopback\nallow-hotplug ens192\niface ens192 inet dhcp\n");
    GuestRoot::new(Arc::new(fs), "sda2")
}

#[test]
fn debian_12() {
    let info = linux::inspect(&debian12()).unwrap();
    let os = info.os.as_ref().unwrap();
    assert_eq!(os.id, "debian");
    assert_eq!((os.major, os.minor), (Some(12), Some(0)));
    assert_eq!(os.version.as_deref(), Some("12"));
    assert_eq!(os.codename.as_deref(), Some("bookworm"));
    assert_eq!(os.product_name.as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
    assert_eq!(os.source, "/etc/os-release");
    assert_eq!(info.hostname.as_deref(), Some("deb12"));
    assert_eq!(info.arch.as_deref(), Some("x86_64"));
    assert_eq!(info.fstab.len(), 3);
    assert_eq!(info.fstab[0].spec, DeviceSpec::Uuid("0d9a-root".into()));
    assert_eq!(info.fstab[1].mountpoint, "/boot/efi");
    assert!(info.fstab[2].is_swap());
    assert_eq!(info.kernels.len(), 1);
    let k = &info.kernels[0];
    assert_eq!(k.path, "/boot/vmlinuz-6.1.0-18-amd64");
    assert_eq!(k.version, "6.1.0-18-amd64");
    assert!(k
        .version_string
        .as_deref()
        .unwrap()
        .starts_with("6.1.0-18-amd64 (debian-kernel"));
    assert_eq!(k.modules_dir.as_deref(), Some("/lib/modules/6.1.0-18-amd64"));
    assert_eq!(k.initramfs.as_deref(), Some("/boot/initrd.img-6.1.0-18-amd64"));
    let m = |n: &str| k.modules.iter().find(|m| m.name == n).unwrap();
    assert!(m("virtio_pci").builtin && m("virtio_pci").module_paths.is_empty());
    assert_eq!(
        m("virtio_blk").module_paths,
        ["/lib/modules/6.1.0-18-amd64/kernel/drivers/block/virtio_blk.ko"]
    );
    assert_eq!(m("virtio_blk").in_initramfs, Some(true));
    assert_eq!(
        m("virtio_net").in_initramfs,
        Some(true),
        "virtio_net.ko.xz is in the fixture"
    );
    assert_eq!(m("virtio_scsi").in_initramfs, Some(false));
    let bl = info.bootloader.as_ref().unwrap();
    assert_eq!((bl.kind.as_str(), bl.flavour.as_deref()), ("grub2", Some("efi")));
    assert_eq!(bl.config_path, "/boot/grub/grub.cfg");
    assert_eq!(bl.entries.len(), 2);
    assert_eq!(bl.default_title.as_deref(), Some("Debian GNU/Linux"));
    assert_eq!(bl.default_kernel.as_deref(), Some("/boot/vmlinuz-6.1.0-18-amd64"));
    assert_eq!(
        bl.default_cmdline.as_deref(),
        Some("root=UUID=0d9a-root ro quiet")
    );
    assert_eq!(
        bl.entries[1].submenu.as_deref(),
        Some("Advanced options for Debian GNU/Linux")
    );
    assert_eq!(info.packages.format.as_deref(), Some("deb"));
    assert_eq!(info.packages.manager.as_deref(), Some("apt"));
    assert_eq!(info.packages.installed.len(), 3);
    assert_eq!(info.hypervisor_tools.len(), 1);
    let t = &info.hypervisor_tools[0];
    assert_eq!(
        (t.id.as_str(), t.hypervisor.as_str()),
        ("open-vm-tools", "vmware")
    );
    assert_eq!(t.packages, ["open-vm-tools"]);
    assert_eq!(t.paths, ["/usr/bin/vmtoolsd"]);
    assert_eq!(
        t.services,
        [
            "/usr/lib/systemd/system/open-vm-tools.service",
            "/lib/systemd/system/open-vm-tools.service"
        ]
    );
    assert_eq!(info.network.len(), 1);
    assert_eq!(info.network[0].interfaces, ["ens192"]);
    assert!(!info.network[0].pins_mac());
    assert!(info.warnings.is_empty(), "{:?}", info.warnings);
    // JSON field names are part of the interface.
    let v = serde_json::to_value(&info).unwrap();
    for key in [
        "os",
        "hostname",
        "arch",
        "fstab",
        "crypttab",
        "kernels",
        "bootloader",
        "hypervisor_tools",
        "packages",
        "network",
        "warnings",
    ] {
        assert!(v.get(key).is_some(), "{key}");
    }
    assert_eq!(v["kernels"][0]["modules"][1]["in_initramfs"], true);
    assert_eq!(v["fstab"][0]["spec"]["kind"], "uuid");
}

fn rhel9() -> GuestRoot {
    let ver = "5.14.0-362.8.1.el9_3.x86_64";
    let mut root = MemFs::new();
    root.file("/etc/os-release", b"NAME=\"Red Hat Enterprise Linux\"\nVERSION=\"9.3 (Plow)\"\nID=\"rhel\"\nID_LIKE=\"fedora\"\nVERSION_ID=\"9.3\"\nPLATFORM_ID=\"platform:el9\"\nPRETTY_NAME=\"Red Hat Enterprise Linux 9.3 (Plow)\"\n");
    root.file(
        "/etc/redhat-release",
        b"Red Hat Enterprise Linux release 9.3 (Plow)\n",
    );
    root.file("/etc/hostname", b"rhel9.example.com\n");
    root.symlink("/bin", "usr/bin");
    root.symlink("/lib", "usr/lib");
    root.symlink("/usr/bin/sh", "bash");
    root.file("/usr/bin/bash", &elf(62));
    root.file("/etc/fstab", b"/dev/mapper/rhel-root   /     xfs  defaults 0 0\nUUID=7c1e-boot /boot xfs defaults 0 0\n/dev/mapper/rhel-swap none swap defaults 0 0\n");
    root.file("/etc/crypttab", b"luks-1f2e UUID=1f2e none discard\n");
    root.file(&format!("/usr/lib/modules/{ver}/vmlinuz"), &bzimage(ver));
    root.file(
        &format!("/usr/lib/modules/{ver}/modules.dep"),
        b"kernel/drivers/block/virtio_blk.ko.xz:\nkernel/drivers/scsi/virtio_scsi.ko.xz:\n",
    );
    root.file(
        &format!("/usr/lib/modules/{ver}/modules.builtin"),
        b"kernel/drivers/virtio/virtio_pci.ko\nkernel/drivers/net/virtio_net.ko\n",
    );
    root.dir("/boot");
    root.dir("/var/lib/rpm");
    root.file("/usr/bin/dnf", b"#!/usr/bin/python3\n");
    root.file(
        "/etc/sysconfig/network-scripts/ifcfg-ens192",
        b"TYPE=Ethernet\nBOOTPROTO=dhcp\nNAME=ens192\nDEVICE=ens192\nHWADDR=00:15:5D:01:02:03\nONBOOT=yes\n",
    );
    root.file("/etc/NetworkManager/system-connections/ens192.nmconnection", b"[connection]\nid=ens192\ntype=ethernet\ninterface-name=ens192\n\n[ethernet]\nmac-address=00:15:5D:01:02:03\n");
    root.file("/usr/sbin/hv_kvp_daemon", &elf(62));
    root.file("/usr/lib/systemd/system/hypervkvpd.service", b"[Unit]\n");
    let mut boot = MemFs::new();
    boot.file(&format!("/vmlinuz-{ver}"), &bzimage(ver));
    boot.file(&format!("/initramfs-{ver}.img"), &read("initrd-xz-gz.img"));
    boot.file("/vmlinuz-0-rescue-abc", &bzimage("5.14.0-70.el9.x86_64"));
    boot.file(&format!("/loader/entries/abc-{ver}.conf"), format!("title Red Hat Enterprise Linux ({ver}) 9.3 (Plow)\nversion {ver}\nlinux /vmlinuz-{ver}\ninitrd /initramfs-{ver}.img $tuned_initrd\noptions $kernelopts $tuned_params\nid rhel-20231031-{ver}\n").as_bytes());
    boot.file("/loader/entries/abc-0-rescue.conf", b"title Red Hat Enterprise Linux (0-rescue-abc) 9.3 (Plow)\nversion 0-rescue-abc\nlinux /vmlinuz-0-rescue-abc\noptions $kernelopts\n");
    boot.file("/grub2/grub.cfg", b"set pager=1\nif [ -f ${config_directory}/grubenv ]; then\n  load_env -f ${config_directory}/grubenv\nelif [ -s $prefix/grubenv ]; then\n  load_env\nfi\nif [ \"${next_entry}\" ] ; then\n   set default=\"${next_entry}\"\n   set next_entry=\nelse\n   set default=\"${saved_entry}\"\nfi\ninsmod blscfg\nblscfg\n");
    boot.file("/grub2/grubenv", format!("# GRUB Environment Block\nsaved_entry=abc-{ver}\nkernelopts=root=/dev/mapper/rhel-root ro crashkernel=1G-4G:192M resume=/dev/mapper/rhel-swap rd.lvm.lv=rhel/root\nboot_success=0\n{}\n", "#".repeat(200)).as_bytes());
    boot.dir("/grub2/i386-pc");
    let mut g = GuestRoot::new(Arc::new(root), "rhel/root");
    g.mount("/boot", Arc::new(boot), "sda1").unwrap();
    g
}

#[test]
fn rhel_9_bls() {
    let ver = "5.14.0-362.8.1.el9_3.x86_64";
    let info = linux::inspect(&rhel9()).unwrap();
    let os = info.os.as_ref().unwrap();
    assert_eq!((os.id.as_str(), os.major, os.minor), ("rhel", Some(9), Some(3)));
    assert_eq!(os.id_like, ["fedora"]);
    assert_eq!(os.codename.as_deref(), Some("Plow"));
    assert_eq!(info.hostname.as_deref(), Some("rhel9.example.com"));
    assert_eq!(
        info.fstab[0].spec,
        DeviceSpec::Device("/dev/mapper/rhel-root".into())
    );
    assert_eq!(info.crypttab.len(), 1);
    // Both kernels in /boot; the Fedora-style copy in /lib/modules is the same version.
    let versions: Vec<_> = info.kernels.iter().map(|k| k.version.as_str()).collect();
    assert_eq!(versions, ["0-rescue-abc", ver]);
    let k = &info.kernels[1];
    assert_eq!(
        k.initramfs.as_deref(),
        Some(format!("/boot/initramfs-{ver}.img").as_str())
    );
    assert_eq!(info.kernels[0].modules_dir, None);
    let m = |n: &str| k.modules.iter().find(|m| m.name == n).unwrap().clone();
    assert!(m("virtio_net").builtin);
    assert_eq!(
        m("virtio_scsi").module_paths,
        [format!(
            "/lib/modules/{ver}/kernel/drivers/scsi/virtio_scsi.ko.xz"
        )]
    );
    assert_eq!(m("virtio_blk").in_initramfs, Some(true));
    let bl = info.bootloader.as_ref().unwrap();
    assert_eq!((bl.kind.as_str(), bl.flavour.as_deref()), ("grub2", Some("bios")));
    assert_eq!(bl.config_path, "/boot/grub2/grub.cfg");
    assert_eq!(bl.entries.len(), 2);
    assert_eq!(
        bl.entries[0].id.as_deref(),
        Some(format!("abc-{ver}").as_str()),
        "newest first"
    );
    assert_eq!(
        bl.default_title.as_deref(),
        Some(format!("Red Hat Enterprise Linux ({ver}) 9.3 (Plow)").as_str())
    );
    assert_eq!(
        bl.default_kernel.as_deref(),
        Some(format!("/boot/vmlinuz-{ver}").as_str())
    );
    assert_eq!(bl.default_cmdline.as_deref(), Some("root=/dev/mapper/rhel-root ro crashkernel=1G-4G:192M resume=/dev/mapper/rhel-swap rd.lvm.lv=rhel/root $tuned_params"));
    assert_eq!(info.packages.format.as_deref(), Some("rpm"));
    assert_eq!(info.packages.manager.as_deref(), Some("dnf"));
    assert!(info.packages.installed.is_empty());
    assert_eq!(info.hypervisor_tools.len(), 1);
    assert_eq!(info.hypervisor_tools[0].id, "hyperv-daemons");
    assert_eq!(
        info.hypervisor_tools[0].services,
        [
            "/usr/lib/systemd/system/hypervkvpd.service",
            "/lib/systemd/system/hypervkvpd.service"
        ]
    );
    assert_eq!(info.network.len(), 2);
    assert!(info
        .network
        .iter()
        .all(|n| n.pins_mac() && n.macs == ["00:15:5d:01:02:03"] && n.interfaces == ["ens192"]));
    assert_eq!(info.network[0].kind, "ifcfg");
    assert_eq!(info.network[1].kind, "networkmanager");
    assert!(info.warnings.is_empty(), "{:?}", info.warnings);
}

#[test]
fn ubuntu_netplan_virtualbox() {
    let mut fs = MemFs::new();
    fs.file("/usr/lib/os-release", b"PRETTY_NAME=\"Ubuntu 22.04.4 LTS\"\nNAME=\"Ubuntu\"\nVERSION_ID=\"22.04\"\nVERSION=\"22.04.4 LTS (Jammy Jellyfish)\"\nID=ubuntu\nID_LIKE=debian\nUBUNTU_CODENAME=jammy\n");
    fs.symlink("/etc/os-release", "../usr/lib/os-release");
    fs.file("/etc/hostname", b"# comment\n\nubuntu-vm\n");
    fs.file("/bin/sh", &elf(183));
    fs.file("/etc/netplan/50-cloud-init.yaml", b"network:\n    ethernets:\n        eth0:\n            dhcp4: true\n            match:\n                macaddress: 08:00:27:AB:CD:EF\n            set-name: eth0\n    version: 2\n");
    fs.file(
        "/etc/udev/rules.d/70-persistent-net.rules",
        b"SUBSYSTEM==\"net\", ACTION==\"add\", ATTR{address}==\"08:00:27:ab:cd:ef\", NAME=\"eth0\"\n",
    );
    fs.file("/var/lib/dpkg/status", b"Package: virtualbox-guest-utils\nStatus: install ok installed\nVersion: 6.1.50-dfsg-1~ubuntu1.22.04.1\n");
    fs.dir("/opt/VBoxGuestAdditions-7.0.14/bin");
    fs.file("/usr/bin/apt-get", &elf(183));
    let info = linux::inspect(&GuestRoot::new(Arc::new(fs), "sda1")).unwrap();
    let os = info.os.as_ref().unwrap();
    assert_eq!(
        (os.id.as_str(), os.major, os.minor),
        ("ubuntu", Some(22), Some(4))
    );
    assert_eq!(os.codename.as_deref(), Some("jammy"));
    assert_eq!(os.id_like, ["debian"]);
    assert_eq!(info.hostname.as_deref(), Some("ubuntu-vm"));
    assert_eq!(info.arch.as_deref(), Some("aarch64"));
    assert!(info.kernels.is_empty() && info.bootloader.is_none() && info.fstab.is_empty());
    let np = &info.network[0];
    assert_eq!(
        (np.kind.as_str(), np.interfaces.as_slice()),
        ("netplan", &["eth0".to_string()][..])
    );
    assert_eq!(np.macs, ["08:00:27:ab:cd:ef"]);
    assert_eq!(info.network[1].kind, "udev");
    assert!(info.network[1].pins_mac());
    let t = &info.hypervisor_tools[0];
    assert_eq!(t.id, "virtualbox-guest-additions");
    assert_eq!(t.packages, ["virtualbox-guest-utils"]);
    assert_eq!(t.paths, ["/opt/VBoxGuestAdditions-7.0.14"]);
    assert_eq!(info.packages.manager.as_deref(), Some("apt"));
}

#[test]
fn sles_11_grub_legacy_vmware_tools() {
    let mut fs = MemFs::new();
    fs.file(
        "/etc/SuSE-release",
        b"SUSE Linux Enterprise Server 11 (x86_64)\nVERSION = 11\nPATCHLEVEL = 4\n",
    );
    fs.file("/etc/HOSTNAME", b"sles11.suse.test\n");
    fs.file("/bin/sh", &elf(62));
    fs.file("/etc/fstab", b"/dev/disk/by-id/ata-VMware_Virtual_IDE-part2 / ext3 acl,user_xattr 1 1\n/dev/disk/by-label/BOOT /boot ext3 defaults 1 2\n");
    fs.file("/boot/vmlinuz-3.0.101-63-default", b"not a bzImage");
    fs.file("/boot/initrd-3.0.101-63-default", &read("initrd-early-lz4.img"));
    fs.file(
        "/lib/modules/3.0.101-63-default/kernel/drivers/block/virtio_blk.ko",
        b"ko",
    );
    fs.file(
        "/lib/modules/3.0.101-63-default/kernel/drivers/virtio/virtio_pci.ko",
        b"ko",
    );
    fs.file("/boot/grub/menu.lst", b"# Modified by YaST2.\ndefault 1\ntimeout 8\ntitle SLES 11 SP4 - 3.0.101-63 (failsafe)\n    root (hd0,1)\n    kernel /boot/vmlinuz-3.0.101-63-default root=/dev/sda2 failsafe\ntitle SUSE Linux Enterprise Server 11 SP4 - 3.0.101-63\n    root (hd0,1)\n    kernel /boot/vmlinuz-3.0.101-63-default root=/dev/disk/by-id/ata-x-part2 resume=/dev/sda1 splash=silent showopts\n    initrd /boot/initrd-3.0.101-63-default\n");
    fs.file(
        "/etc/sysconfig/network/ifcfg-eth0",
        b"BOOTPROTO='dhcp'\nSTARTMODE='auto'\nLLADDR='00:50:56:12:34:56'\n",
    );
    fs.file("/etc/sysconfig/network/config", b"NETCONFIG_DNS_POLICY=auto\n");
    fs.file("/etc/sysconfig/network/ifcfg-lo", b"IPADDR=127.0.0.1\n");
    fs.dir("/var/lib/rpm");
    fs.file("/usr/bin/zypper", &elf(62));
    fs.file("/etc/vmware-tools/locations", b"answer BINDIR /usr/bin\n");
    fs.file("/etc/init.d/vmware-tools", b"#!/bin/sh\n");
    let info = linux::inspect(&GuestRoot::new(Arc::new(fs), "sda2")).unwrap();
    let os = info.os.as_ref().unwrap();
    assert_eq!((os.id.as_str(), os.major, os.minor), ("sles", Some(11), Some(4)));
    assert_eq!(os.source, "/etc/SuSE-release");
    assert_eq!(info.hostname.as_deref(), Some("sles11.suse.test"));
    assert_eq!(info.fstab[1].spec, DeviceSpec::Label("BOOT".into()));
    let k = &info.kernels[0];
    assert_eq!(
        (k.version.as_str(), k.version_string.as_deref()),
        ("3.0.101-63-default", None)
    );
    assert_eq!(k.initramfs.as_deref(), Some("/boot/initrd-3.0.101-63-default"));
    let blk = k.modules.iter().find(|m| m.name == "virtio_blk").unwrap();
    assert_eq!(
        blk.module_paths,
        ["/lib/modules/3.0.101-63-default/kernel/drivers/block/virtio_blk.ko"]
    );
    assert_eq!(blk.in_initramfs, Some(true));
    let bl = info.bootloader.as_ref().unwrap();
    assert_eq!(bl.kind, "grub-legacy");
    assert_eq!(
        bl.default_title.as_deref(),
        Some("SUSE Linux Enterprise Server 11 SP4 - 3.0.101-63")
    );
    assert_eq!(
        bl.default_kernel.as_deref(),
        Some("/boot/vmlinuz-3.0.101-63-default")
    );
    assert_eq!(
        bl.default_cmdline.as_deref(),
        Some("root=/dev/disk/by-id/ata-x-part2 resume=/dev/sda1 splash=silent showopts")
    );
    assert_eq!(
        (info.packages.format.as_deref(), info.packages.manager.as_deref()),
        (Some("rpm"), Some("zypper"))
    );
    let t = &info.hypervisor_tools[0];
    assert_eq!(t.id, "vmware-tools");
    assert_eq!(t.services, ["/etc/init.d/vmware-tools"]);
    assert_eq!(info.network.len(), 1);
    assert_eq!(info.network[0].kind, "suse-ifcfg");
    assert_eq!(
        (
            info.network[0].interfaces.as_slice(),
            info.network[0].macs.as_slice()
        ),
        (&["eth0".to_string()][..], &["00:50:56:12:34:56".to_string()][..])
    );
}

#[test]
fn alpine_extlinux() {
    let mut fs = MemFs::new();
    fs.file("/etc/os-release", b"NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.19.1\nPRETTY_NAME=\"Alpine Linux v3.19\"\nHOME_URL=\"https://alpinelinux.org/\"\n");
    fs.file("/etc/hostname", b"alpine\n");
    fs.file("/bin/busybox", &elf(62));
    fs.symlink("/bin/sh", "/bin/busybox");
    fs.file(
        "/etc/fstab",
        b"UUID=a1b2 / ext4 rw,relatime 0 1\nUUID=c3d4 /boot ext4 rw,relatime 0 2\n",
    );
    fs.file(
        "/boot/vmlinuz-lts",
        &bzimage("6.6.14-0-lts (buildozer@build-3-19-x86_64) #1-Alpine SMP PREEMPT_DYNAMIC"),
    );
    fs.file("/boot/initramfs-lts", &read("initrd-early-zst.img"));
    fs.file("/lib/modules/6.6.14-0-lts/modules.dep", b"kernel/drivers/block/virtio_blk.ko.gz:\nkernel/drivers/net/virtio_net.ko.gz: kernel/drivers/net/net_failover.ko.gz\n");
    fs.file("/boot/extlinux.conf", b"DEFAULT menu.c32\nPROMPT 0\nMENU TITLE Alpine/Linux Boot Menu\nMENU HIDDEN\nTIMEOUT 10\nLABEL lts\n  MENU LABEL Linux lts\n  LINUX vmlinuz-lts\n  INITRD initramfs-lts\n  APPEND root=UUID=a1b2 modules=sd-mod,usb-storage,ext4 quiet rootfstype=ext4\nMENU SEPARATOR\n");
    fs.file(
        "/lib/apk/db/installed",
        b"C:Q1abc=\nP:musl\nV:1.2.4_git20230717-r4\n\nP:open-vm-tools\nV:12.3.5-r0\n",
    );
    fs.file("/sbin/apk", &elf(62));
    fs.file(
        "/etc/network/interfaces",
        b"auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet dhcp\n",
    );
    let info = linux::inspect(&GuestRoot::new(Arc::new(fs), "vda3")).unwrap();
    let os = info.os.as_ref().unwrap();
    assert_eq!(
        (os.id.as_str(), os.major, os.minor),
        ("alpine", Some(3), Some(19))
    );
    assert_eq!(os.version.as_deref(), Some("3.19.1"));
    assert_eq!(info.arch.as_deref(), Some("x86_64"));
    let k = &info.kernels[0];
    assert_eq!(k.version, "lts");
    assert_eq!(k.modules_dir.as_deref(), Some("/lib/modules/6.6.14-0-lts"));
    assert_eq!(k.initramfs.as_deref(), Some("/boot/initramfs-lts"));
    let net = k.modules.iter().find(|m| m.name == "virtio_net").unwrap();
    assert_eq!(
        net.module_paths,
        ["/lib/modules/6.6.14-0-lts/kernel/drivers/net/virtio_net.ko.gz"]
    );
    let bl = info.bootloader.as_ref().unwrap();
    assert_eq!(
        (bl.kind.as_str(), bl.config_path.as_str()),
        ("extlinux", "/boot/extlinux.conf")
    );
    assert_eq!(bl.default_title.as_deref(), Some("Linux lts"));
    assert_eq!(bl.default_kernel.as_deref(), Some("/boot/vmlinuz-lts"));
    assert_eq!(
        bl.default_cmdline.as_deref(),
        Some("root=UUID=a1b2 modules=sd-mod,usb-storage,ext4 quiet rootfstype=ext4")
    );
    assert_eq!(
        (info.packages.format.as_deref(), info.packages.manager.as_deref()),
        (Some("apk"), Some("apk"))
    );
    assert_eq!(info.packages.installed.len(), 2);
    assert_eq!(info.hypervisor_tools[0].packages, ["open-vm-tools"]);
    assert_eq!(info.network[0].interfaces, ["eth0"]);
}

#[test]
fn not_linux_and_damaged_files() {
    let mut fs = MemFs::new();
    fs.file("/Windows/System32/config/SYSTEM", b"regf");
    let g = GuestRoot::new(Arc::new(fs), "sda2");
    assert!(!linux::is_linux_root(&g));
    assert!(matches!(linux::inspect(&g), Err(Error::NotFound(_))));

    // A corrupt initramfs and a symlink loop are warnings, not failures.
    let mut fs = MemFs::new();
    fs.file("/etc/fstab", b"/dev/sda1 / ext4 defaults 0 1\n");
    fs.file("/boot/vmlinuz-6.1", b"k");
    fs.file("/boot/initrd.img-6.1", b"070701garbage");
    fs.dir("/lib/modules/6.1");
    fs.symlink("/etc/hostname", "/etc/hostname");
    let g = GuestRoot::new(Arc::new(fs), "sda1");
    assert!(linux::is_linux_root(&g));
    let info = linux::inspect(&g).unwrap();
    assert_eq!(info.os, None);
    assert_eq!(info.hostname, None);
    assert_eq!(info.kernels[0].modules[0].in_initramfs, None);
    assert_eq!(info.warnings.len(), 2, "{:?}", info.warnings);
    assert!(info
        .warnings
        .iter()
        .any(|w| w.contains("initramfs /boot/initrd.img-6.1")));
    assert!(info.warnings.iter().any(|w| w.contains("/etc/hostname")));
}

#[test]
fn arch_systemd_boot_networkd_pacman() {
    let mut root = MemFs::new();
    root.file(
        "/usr/lib/os-release",
        b"NAME=\"Arch Linux\"\nPRETTY_NAME=\"Arch Linux\"\nID=arch\nBUILD_ID=rolling\n",
    );
    root.file("/etc/hostname", b"archvm\n");
    root.symlink("/bin", "usr/bin");
    root.file("/usr/bin/sh", &elf(62));
    root.file(
        "/etc/fstab",
        b"UUID=aaaa / btrfs rw,subvol=/@,subvolid=256 0 0\nUUID=BBBB-CCCC /boot vfat rw 0 2\n",
    );
    root.dir("/boot");
    root.symlink("/lib", "usr/lib");
    root.file(
        "/usr/lib/modules/6.7.4-arch1-1/modules.builtin",
        b"kernel/drivers/virtio/virtio_pci.ko\nkernel/drivers/block/virtio_blk.ko\n",
    );
    root.file(
        "/usr/lib/modules/6.7.4-arch1-1/vmlinuz",
        &bzimage("6.7.4-arch1-1 (linux@archlinux) #1 SMP"),
    );
    root.dir("/var/lib/pacman/local/linux-6.7.4.arch1-1");
    root.dir("/var/lib/pacman/local/open-vm-tools-6:12.3.5-1");
    root.file("/usr/bin/pacman", &elf(62));
    root.file(
        "/etc/systemd/network/20-wired.network",
        b"[Match]\nName=en*\n\n[Network]\nDHCP=yes\n",
    );
    root.file(
        "/etc/systemd/network/10-lan.link",
        b"[Match]\nMACAddress=52:54:00:12:34:56\n\n[Link]\nName=lan0\n",
    );
    let mut esp = MemFs::new();
    esp.file("/loader/loader.conf", b"default  arch-*\ntimeout 3\n");
    esp.file("/loader/entries/arch-fallback.conf", b"title Arch Linux (fallback initramfs)\nlinux /vmlinuz-linux\ninitrd /initramfs-linux-fallback.img\noptions root=UUID=aaaa rw rootflags=subvol=@\n");
    esp.file(
        "/loader/entries/2-other.conf",
        b"title Other\nlinux /vmlinuz-other\n",
    );
    esp.file(
        "/vmlinuz-linux",
        &bzimage("6.7.4-arch1-1 (linux@archlinux) #1 SMP"),
    );
    esp.file("/initramfs-linux.img", &read("initrd-early-zst.img"));
    esp.dir("/EFI/systemd");
    let mut g = GuestRoot::new(Arc::new(root), "vda2");
    g.mount("/boot", Arc::new(esp), "vda1").unwrap();
    let info = linux::inspect(&g).unwrap();
    let os = info.os.as_ref().unwrap();
    assert_eq!(
        (os.id.as_str(), os.version.as_deref(), os.major),
        ("arch", None, None)
    );
    assert_eq!(os.source, "/usr/lib/os-release");
    assert_eq!(
        (info.fstab[0].subvol(), info.fstab[0].subvolid()),
        (Some("/@"), Some(256))
    );
    // /boot/vmlinuz-linux and the Fedora-style copy under /lib/modules are both listed.
    let versions: Vec<_> = info.kernels.iter().map(|k| k.version.as_str()).collect();
    assert_eq!(versions, ["linux", "6.7.4-arch1-1"]);
    assert_eq!(
        info.kernels[0].initramfs.as_deref(),
        Some("/boot/initramfs-linux.img")
    );
    assert_eq!(info.kernels[0].modules_dir, None);
    let k = &info.kernels[1];
    assert!(k.modules.iter().find(|m| m.name == "virtio_blk").unwrap().builtin);
    let bl = info.bootloader.as_ref().unwrap();
    assert_eq!(
        (bl.kind.as_str(), bl.flavour.as_deref()),
        ("systemd-boot", Some("efi"))
    );
    assert_eq!(bl.config_path, "/boot/loader/loader.conf");
    assert_eq!(bl.entries.len(), 2);
    assert_eq!(
        bl.default_title.as_deref(),
        Some("Arch Linux (fallback initramfs)")
    );
    assert_eq!(bl.default_kernel.as_deref(), Some("/boot/vmlinuz-linux"));
    assert_eq!(
        bl.default_cmdline.as_deref(),
        Some("root=UUID=aaaa rw rootflags=subvol=@")
    );
    assert_eq!(
        (info.packages.format.as_deref(), info.packages.manager.as_deref()),
        (Some("pacman"), Some("pacman"))
    );
    assert_eq!(info.packages.installed.len(), 2);
    assert_eq!(info.hypervisor_tools[0].packages, ["open-vm-tools"]);
    assert_eq!(info.network.len(), 2);
    assert_eq!(info.network[0].path, "/etc/systemd/network/10-lan.link");
    assert_eq!(
        (
            info.network[0].interfaces.as_slice(),
            info.network[0].macs.as_slice()
        ),
        (&["lan0".to_string()][..], &["52:54:00:12:34:56".to_string()][..])
    );
    assert_eq!(info.network[1].interfaces, ["en*"]);
    assert!(!info.network[1].pins_mac());
}
