//! The qemu target (`--target qemu`): `NAME.sh`, an executable POSIX shell
//! script that starts the VM with `qemu-system-x86_64` on a q35 machine.

use super::{
    comment_safe, disk_dev_name, is_windows, map_network, nic_mac, shell_quote, validate, write_file,
    BlockDriver, NetTarget, OutputVm, TargetOptions,
};
use crate::vm::Firmware;
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use v2x_formats::{Error, Result};

/// OVMF firmware code and matching variable-store template, tried in order by
/// the script at run time (Debian/Ubuntu 4M and 2M builds, Fedora, Arch, SUSE).
pub const OVMF_PAIRS: &[(&str, &str)] = &[
    (
        "/usr/share/OVMF/OVMF_CODE_4M.fd",
        "/usr/share/OVMF/OVMF_VARS_4M.fd",
    ),
    ("/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"),
    (
        "/usr/share/edk2/ovmf/OVMF_CODE.fd",
        "/usr/share/edk2/ovmf/OVMF_VARS.fd",
    ),
    (
        "/usr/share/edk2/x64/OVMF_CODE.4m.fd",
        "/usr/share/edk2/x64/OVMF_VARS.4m.fd",
    ),
    (
        "/usr/share/qemu/ovmf-x86_64-code.bin",
        "/usr/share/qemu/ovmf-x86_64-vars.bin",
    ),
];

/// Writes `NAME.sh` (mode 0755) into `outdir` and returns its path.
pub fn write(vm: &OutputVm, opts: &TargetOptions, outdir: &Path) -> Result<Vec<PathBuf>> {
    validate(vm, opts)?;
    let script = script(vm, opts)?;
    let path = write_file(outdir, super::TargetKind::Qemu, &vm.name, &script)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| Error::io(format!("making {} executable", path.display()), e))?;
    Ok(vec![path])
}

/// Escapes a value inside a QEMU option list (`key=value,...`): commas double.
pub fn qemu_opt_value(s: &str) -> String {
    s.replace(',', ",,")
}

/// The text of the start script.
pub fn script(vm: &OutputVm, opts: &TargetOptions) -> Result<String> {
    let windows = is_windows(vm);
    let name = &vm.name;
    let mut s = String::new();
    s.push_str("#!/bin/sh\n");
    let _ = writeln!(
        s,
        "# {}: a VM converted by v2x, started with qemu-system-x86_64.",
        comment_safe(name)
    );
    s.push_str(&HEADER.replace("./NAME.sh", &shell_quote(&format!("./{}.sh", comment_safe(name)))));
    for (i, nic) in vm.nics.iter().enumerate() {
        let src = nic.network.as_deref().map_or("-".to_string(), comment_safe);
        let on = match map_network(nic, opts) {
            NetTarget::Bridge(b) => format!("host bridge {}", comment_safe(&b)),
            NetTarget::Network(n) => format!(
                "user networking (libvirt network {} has no qemu meaning)",
                comment_safe(&n)
            ),
            NetTarget::Default => "user networking".to_string(),
        };
        let _ = writeln!(s, "# NIC {i} (source network {src}): {on}");
    }
    s.push_str(PRELUDE);

    let mut args: Vec<String> = vec![
        "\"$qemu\"".into(),
        format!(
            "-name {}",
            shell_quote(&format!("guest={}", qemu_opt_value(name)))
        ),
        "-machine q35".into(),
        "$accel".into(),
        "-cpu max".into(),
        format!("-m {}", vm.memory_mib),
        format!("-smp {}", vm.vcpus),
    ];
    if vm.firmware == Firmware::Uefi {
        s.push_str(&uefi_setup(name));
        args.push("-drive \"if=pflash,format=raw,unit=0,readonly=on,file=$(qopt \"$ovmf_code\")\"".into());
        args.push("-drive \"if=pflash,format=raw,unit=1,file=$(qopt \"$ovmf_vars\")\"".into());
    }
    if opts.block_driver == BlockDriver::VirtioScsi {
        args.push("-device virtio-scsi-pci,id=scsi0".into());
    }
    for (i, disk) in vm.disks.iter().enumerate() {
        if disk.format.is_empty() || !disk.format.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(Error::invalid(format!("disk format {:?}", disk.format)));
        }
        let drive = format!(
            "file={},format={},if=none,id=disk{i},discard=unmap",
            qemu_opt_value(&disk.path.to_string_lossy()),
            disk.format
        );
        args.push(format!("-drive {}", shell_quote(&drive)));
        let boot = if i == 0 { ",bootindex=0" } else { "" };
        let dev = disk_dev_name(opts.block_driver, i);
        args.push(match opts.block_driver {
            BlockDriver::VirtioBlk => format!("-device virtio-blk-pci,drive=disk{i},id={dev}{boot}"),
            BlockDriver::VirtioScsi => format!("-device scsi-hd,bus=scsi0.0,drive=disk{i},id={dev}{boot}"),
        });
    }
    for (i, nic) in vm.nics.iter().enumerate() {
        let netdev = match map_network(nic, opts) {
            NetTarget::Bridge(b) => format!("bridge,id=net{i},br={}", qemu_opt_value(&b)),
            NetTarget::Network(_) | NetTarget::Default => format!("user,id=net{i}"),
        };
        args.push(format!("-netdev {}", shell_quote(&netdev)));
        let mac = nic_mac(nic).map(|m| format!(",mac={m}")).unwrap_or_default();
        args.push(format!("-device virtio-net-pci,netdev=net{i}{mac}"));
    }
    args.extend([
        "-device virtio-rng-pci".to_string(),
        "-device virtio-balloon-pci".to_string(),
        "-device qemu-xhci -device usb-tablet".to_string(),
        format!("-rtc base={}", if windows { "localtime" } else { "utc" }),
        "-serial \"${V2X_QEMU_SERIAL:-mon:stdio}\"".to_string(),
        "\"$@\"".to_string(),
    ]);
    s.push_str("exec ");
    s.push_str(&args.join(" \\\n  "));
    s.push('\n');
    Ok(s)
}

/// The shell lines that find OVMF and make the per-VM variable store beside
/// the script on first run.
fn uefi_setup(name: &str) -> String {
    let mut s = String::from(
        "\n# UEFI: the first OVMF build found (override with V2X_OVMF_CODE and V2X_OVMF_VARS).\n\
         ovmf_code=${V2X_OVMF_CODE:-}\n\
         ovmf_template=${V2X_OVMF_VARS:-}\n\
         if [ -z \"$ovmf_code\" ]; then\n\
         \x20 while read -r c v; do\n\
         \x20   if [ -f \"$c\" ] && [ -f \"$v\" ]; then ovmf_code=$c; ovmf_template=$v; break; fi\n\
         \x20 done <<'EOF'\n",
    );
    for (code, vars) in OVMF_PAIRS {
        let _ = writeln!(s, "{code} {vars}");
    }
    s.push_str(
        "EOF\n\
         fi\n\
         if [ -z \"$ovmf_code\" ]; then\n\
         \x20 echo \"$0: no OVMF firmware found: install ovmf (or edk2-ovmf), or set V2X_OVMF_CODE and V2X_OVMF_VARS\" >&2\n\
         \x20 exit 1\n\
         fi\n\
         # The VM's own UEFI variables, copied from the template on first run (it must\n\
         # match the code's build: delete it after switching firmware).\n",
    );
    let _ = writeln!(
        s,
        "ovmf_vars=\"$here\"/{}",
        shell_quote(&format!("{name}_VARS.fd"))
    );
    s.push_str(
        "if [ ! -f \"$ovmf_vars\" ]; then\n\
         \x20 if [ -z \"$ovmf_template\" ]; then\n\
         \x20   echo \"$0: set V2X_OVMF_VARS to the variable-store template of $ovmf_code\" >&2\n\
         \x20   exit 1\n\
         \x20 fi\n\
         \x20 cp -- \"$ovmf_template\" \"$ovmf_vars\"\n\
         \x20 chmod u+w -- \"$ovmf_vars\"\n\
         fi\n\n",
    );
    s
}

const HEADER: &str = "\
#
# Usage: ./NAME.sh [more qemu options]   (appended last: -display none, -snapshot, ...)
#
# Environment:
#   V2X_QEMU         the qemu binary (default qemu-system-x86_64)
#   V2X_QEMU_ACCEL   accelerators tried in order, colon-separated (default kvm:tcg);
#                    set V2X_QEMU_ACCEL=tcg where /dev/kvm exists but does not work
#   V2X_QEMU_SERIAL  the serial console (default mon:stdio: this terminal; Ctrl-A X
#                    quits, Ctrl-A C switches to the QEMU monitor); e.g. file:serial.log
#                    or none
#   V2X_OVMF_CODE, V2X_OVMF_VARS   UEFI firmware code and variable-store template
#
# Display: QEMU's default (a window when QEMU has one); headless: ./NAME.sh -display none
#
# Network: user-mode networking (outbound NAT, no inbound connections). To put a
# NIC on a host bridge instead, change its `-netdev user,id=netN` below to
# `-netdev bridge,id=netN,br=br0` (br0 allowed in /etc/qemu/bridge.conf for
# qemu-bridge-helper), or convert with --bridge.
";

const PRELUDE: &str = "
set -e
set -f
here=$(CDPATH='' cd -- \"$(dirname -- \"$0\")\" && pwd)
qemu=${V2X_QEMU:-qemu-system-x86_64}
# A value inside a qemu option list: commas double.
qopt() { printf '%s' \"$1\" | sed 's/,/,,/g'; }

accel=
old_ifs=$IFS
IFS=:
for a in ${V2X_QEMU_ACCEL:-kvm:tcg}; do
  case $a in
    '' | *[!A-Za-z0-9_=.,-]*)
      echo \"$0: bad accelerator '$a' in V2X_QEMU_ACCEL\" >&2
      exit 2
      ;;
  esac
  accel=\"$accel -accel $a\"
done
IFS=$old_ifs
";
