//! The libvirt target (`--target local`): `NAME.xml`, a KVM domain for
//! `virsh define NAME.xml`, on a q35 machine with virtio devices.

use super::xml::XmlDoc;
use super::{
    disk_dev_name, is_windows, map_network, nic_mac, validate, write_file, BlockDriver, NetTarget, OutputVm,
    TargetOptions, DEFAULT_NETWORK,
};
use crate::vm::Firmware;
use std::path::{Path, PathBuf};
use v2x_formats::Result;

/// Namespace of the `<metadata>` element v2x records itself in.
pub const METADATA_NS: &str = "https://example.invalid/v2x/1";

/// Writes `NAME.xml` into `outdir` and returns its path.
pub fn write(vm: &OutputVm, opts: &TargetOptions, outdir: &Path) -> Result<Vec<PathBuf>> {
    validate(vm, opts)?;
    let xml = domain_xml(vm, opts);
    Ok(vec![write_file(
        outdir,
        super::TargetKind::Local,
        &vm.name,
        &xml,
    )?])
}

/// The domain XML of `vm`.
pub fn domain_xml(vm: &OutputVm, opts: &TargetOptions) -> String {
    let windows = is_windows(vm);
    let mut d = XmlDoc::new();
    d.open("domain", &[("type", "kvm")]);
    d.text("name", &[], &vm.name);
    metadata(&mut d, vm);
    let mem = vm.memory_mib.to_string();
    d.text("memory", &[("unit", "MiB")], &mem);
    d.text("currentMemory", &[("unit", "MiB")], &mem);
    d.text("vcpu", &[("placement", "static")], &vm.vcpus.to_string());

    match vm.firmware {
        Firmware::Uefi => {
            // Firmware autoselection (libvirt >= 5.2) finds OVMF from the firmware
            // descriptors and makes the per-VM NVRAM. Secure boot off: the
            // source's key state is unknown and the descriptors list the
            // enrolled-keys build first.
            d.open("os", &[("firmware", "efi")]);
            d.text("type", &[("arch", "x86_64"), ("machine", "q35")], "hvm");
            d.open("firmware", &[]);
            d.empty("feature", &[("enabled", "no"), ("name", "secure-boot")]);
            d.empty("feature", &[("enabled", "no"), ("name", "enrolled-keys")]);
            d.close();
            d.close();
        }
        Firmware::Bios => {
            d.open("os", &[]);
            d.text("type", &[("arch", "x86_64"), ("machine", "q35")], "hvm");
            d.close();
        }
    }

    d.open("features", &[]);
    d.empty("acpi", &[]);
    d.empty("apic", &[]);
    if windows {
        d.open("hyperv", &[("mode", "custom")]);
        d.empty("relaxed", &[("state", "on")]);
        d.empty("vapic", &[("state", "on")]);
        d.empty("spinlocks", &[("state", "on"), ("retries", "8191")]);
        d.close();
    }
    d.close();
    d.empty(
        "cpu",
        &[
            ("mode", "host-passthrough"),
            ("check", "none"),
            ("migratable", "on"),
        ],
    );

    // Windows keeps its RTC in local time; everything else in UTC.
    d.open("clock", &[("offset", if windows { "localtime" } else { "utc" })]);
    d.empty("timer", &[("name", "rtc"), ("tickpolicy", "catchup")]);
    d.empty("timer", &[("name", "pit"), ("tickpolicy", "delay")]);
    d.empty("timer", &[("name", "hpet"), ("present", "no")]);
    if windows {
        d.empty("timer", &[("name", "hypervclock"), ("present", "yes")]);
    }
    d.close();
    d.text("on_poweroff", &[], "destroy");
    d.text("on_reboot", &[], "restart");
    d.text("on_crash", &[], "destroy");

    d.open("devices", &[]);
    disks(&mut d, vm, opts.block_driver);
    interfaces(&mut d, vm, opts);
    d.empty("controller", &[("type", "usb"), ("model", "qemu-xhci")]);
    d.empty("input", &[("type", "tablet"), ("bus", "usb")]);
    d.open("serial", &[("type", "pty")]);
    d.open("target", &[("type", "isa-serial"), ("port", "0")]);
    d.empty("model", &[("name", "isa-serial")]);
    d.close();
    d.close();
    d.open("console", &[("type", "pty")]);
    d.empty("target", &[("type", "serial"), ("port", "0")]);
    d.close();
    d.open("channel", &[("type", "unix")]);
    d.empty(
        "target",
        &[("type", "virtio"), ("name", "org.qemu.guest_agent.0")],
    );
    d.close();
    d.open(
        "graphics",
        &[("type", "vnc"), ("port", "-1"), ("autoport", "yes")],
    );
    d.empty("listen", &[("type", "address"), ("address", "127.0.0.1")]);
    d.close();
    // Windows may lack the virtio-gpu driver; its basic display driver runs on VGA.
    d.open("video", &[]);
    d.empty(
        "model",
        &[
            ("type", if windows { "vga" } else { "virtio" }),
            ("heads", "1"),
            ("primary", "yes"),
        ],
    );
    d.close();
    d.open("rng", &[("model", "virtio")]);
    d.text("backend", &[("model", "random")], "/dev/urandom");
    d.close();
    d.empty("memballoon", &[("model", "virtio")]);
    d.finish()
}

/// `<metadata>`: the converter and what it knew of the source OS.
fn metadata(d: &mut XmlDoc, vm: &OutputVm) {
    d.open("metadata", &[]);
    d.open(
        "v2x:source",
        &[
            ("xmlns:v2x", METADATA_NS),
            ("converter", "v2x"),
            ("version", env!("CARGO_PKG_VERSION")),
        ],
    );
    if let Some(t) = &vm.source_os_type {
        d.text("v2x:os-id", &[], t);
    }
    if let Some(g) = &vm.guest {
        let mut attrs = vec![("type", g.os_type.as_str())];
        if let Some(x) = &g.distro {
            attrs.push(("distro", x));
        }
        if let Some(x) = &g.version {
            attrs.push(("version", x));
        }
        d.text("v2x:guest", &attrs, g.product_name.as_deref().unwrap_or(""));
    }
    d.close();
    d.close();
}

/// One `<disk>` per converted disk, the boot disk first with boot order 1.
fn disks(d: &mut XmlDoc, vm: &OutputVm, driver: BlockDriver) {
    let bus = match driver {
        BlockDriver::VirtioBlk => "virtio",
        BlockDriver::VirtioScsi => "scsi",
    };
    for (i, disk) in vm.disks.iter().enumerate() {
        let dev = disk_dev_name(driver, i);
        d.open("disk", &[("type", "file"), ("device", "disk")]);
        d.empty(
            "driver",
            &[
                ("name", "qemu"),
                ("type", disk.format.as_str()),
                ("discard", "unmap"),
            ],
        );
        d.empty("source", &[("file", &disk.path.to_string_lossy())]);
        d.empty("target", &[("dev", &dev), ("bus", bus)]);
        if i == 0 {
            d.empty("boot", &[("order", "1")]);
        }
        if driver == BlockDriver::VirtioScsi {
            let unit = i.to_string();
            d.empty(
                "address",
                &[
                    ("type", "drive"),
                    ("controller", "0"),
                    ("bus", "0"),
                    ("target", "0"),
                    ("unit", &unit),
                ],
            );
        }
        d.close();
    }
    if driver == BlockDriver::VirtioScsi {
        d.empty(
            "controller",
            &[("type", "scsi"), ("index", "0"), ("model", "virtio-scsi")],
        );
    }
}

/// One virtio `<interface>` per NIC, on its mapped network or bridge.
fn interfaces(d: &mut XmlDoc, vm: &OutputVm, opts: &TargetOptions) {
    for nic in &vm.nics {
        if let Some(src) = &nic.network {
            d.comment(&format!("source network: {src}"));
        }
        let (kind, attr, name) = match map_network(nic, opts) {
            NetTarget::Network(n) => ("network", "network", n),
            NetTarget::Bridge(b) => ("bridge", "bridge", b),
            NetTarget::Default => ("network", "network", DEFAULT_NETWORK.to_string()),
        };
        d.open("interface", &[("type", kind)]);
        if let Some(mac) = nic_mac(nic) {
            d.empty("mac", &[("address", &mac)]);
        }
        d.empty("source", &[(attr, &name)]);
        d.empty("model", &[("type", "virtio")]);
        d.close();
    }
}
