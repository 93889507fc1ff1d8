//! The Linux edit plan: what changes so the guest boots on virtio. Each
//! `*_step` function reads the guest (never writes) and returns a
//! [`Step`](super::plan::Step); [`plan`] runs them in order.

use super::cpio::{append_padding, ArchiveTree, Node};
use super::devnames::{self, NewName, Syntax};
use super::plan::{Edit, EditPlan, Step};
use super::virtio_initramfs::{self, Payload, VirtioRules};
use super::{firstboot, linux_services, uefi};
use crate::fs::guest::GuestRoot;
use crate::guest::initramfs::cpio::Entry;
use crate::guest::initramfs::{self, GuestFile, Visitor};
use crate::guest::inspect::spec::{self, parse_disk_device};
use crate::guest::inspect::Storage;
use crate::guest::linux::kernels::Kernel;
use crate::guest::linux::LinuxInfo;
use v2x_formats::{Error, Result};

/// Largest config file we rewrite.
pub const MAX_CONFIG: u64 = 4 << 20;

/// Files that may name disks, with the syntax each uses. Globs are `dir/*.ext`.
const DEVICE_NAME_FILES: &[(&str, Syntax)] = &[
    ("/etc/fstab", Syntax::Fstab),
    ("/etc/crypttab", Syntax::Crypttab),
    ("/etc/default/grub", Syntax::Cmdline),
    ("/etc/sysconfig/grub", Syntax::Cmdline),
    ("/boot/grub/grub.cfg", Syntax::Cmdline),
    ("/boot/grub2/grub.cfg", Syntax::Cmdline),
    ("/boot/grub/menu.lst", Syntax::Cmdline),
    ("/boot/grub/grub.conf", Syntax::Cmdline),
    ("/boot/extlinux/extlinux.conf", Syntax::Cmdline),
    ("/boot/syslinux/syslinux.cfg", Syntax::Cmdline),
    ("/etc/kernel/cmdline", Syntax::Cmdline),
    ("/boot/grub/device.map", Syntax::Plain),
    ("/boot/grub2/device.map", Syntax::Plain),
    ("/etc/initramfs-tools/conf.d/resume", Syntax::Cmdline),
    ("/boot/loader/entries/*.conf", Syntax::Cmdline),
    ("/boot/efi/EFI/*/grub.cfg", Syntax::Cmdline),
];

/// grubenv files: a fixed 1024-byte block padded with `#`.
const GRUBENV_FILES: &[&str] = &["/boot/grub/grubenv", "/boot/grub2/grubenv"];

/// One installed kernel, as inspection found it.
#[derive(Debug, Clone)]
pub struct KernelRef {
    /// Version string ("6.1.0-18-amd64").
    pub version: String,
    /// Guest path of its initramfs, if it has one.
    pub initramfs: Option<String>,
    /// The existing initramfs's paths, for symlink-safe appending.
    pub initramfs_tree: ArchiveTree,
}

/// Collects the paths (and symlink targets) of an initramfs into an [`ArchiveTree`].
struct TreeCollector(ArchiveTree);

impl Visitor for TreeCollector {
    fn entry(&mut self, e: &Entry) -> Result<bool> {
        if e.is_symlink() {
            return Ok(true);
        }
        let node = if e.is_dir() { Node::Dir } else { Node::File };
        self.0.insert(&e.path(), node);
        Ok(false)
    }
    fn data(&mut self, e: &Entry, data: Vec<u8>) -> Result<()> {
        let target = String::from_utf8_lossy(&data).into_owned();
        self.0.insert(&e.path(), Node::Symlink(target));
        Ok(())
    }
}

/// The kernels of an inspected guest, each with the tree of its current
/// initramfs (read again here, symlink targets included).
pub fn kernel_refs(tree: &GuestRoot, kernels: &[Kernel]) -> Result<Vec<KernelRef>> {
    let mut out = Vec::new();
    for k in kernels {
        // The module directory names the real version (Alpine's vmlinuz-lts).
        let version = k
            .modules_dir
            .as_deref()
            .and_then(|d| d.rsplit('/').next())
            .unwrap_or(&k.version)
            .to_string();
        let mut collector = TreeCollector(ArchiveTree::new());
        if let Some(initrd) = &k.initramfs {
            let file = GuestFile::open(tree, initrd)?;
            initramfs::walk(&file, initramfs::MAX_INITRAMFS_UNPACKED, &mut collector)
                .map_err(|e| e.context_msg(initrd))?;
        }
        out.push(KernelRef {
            version,
            initramfs: k.initramfs.clone(),
            initramfs_tree: collector.0,
        });
    }
    Ok(out)
}

/// Builds the whole plan for a Linux root. `firmware` is inspection's
/// verdict ("uefi" or "bios").
pub fn plan(
    storage: &Storage,
    tree: &GuestRoot,
    info: &LinuxInfo,
    kernels: &[KernelRef],
    firmware: &str,
) -> Result<EditPlan> {
    let rules = VirtioRules::builtin();
    let mut plan = EditPlan::default();
    plan.push(device_names_step(storage, tree)?);
    plan.push(initramfs_step(tree, kernels, &rules)?);
    plan.push(linux_services::initramfs_config_step(tree, &rules)?);
    let (tools, mut scripts) = linux_services::hypervisor_tools_step(tree, info)?;
    plan.push(tools);
    plan.push(linux_services::network_step(tree, info)?);
    plan.push(console_step(tree)?);
    plan.push(selinux_step(tree)?);
    if firmware == "uefi" {
        let arch = info.arch.as_deref().unwrap_or("x86_64");
        let distro = info.os.as_ref().map(|o| o.id.as_str());
        plan.push(uefi::fallback_step(tree, arch, distro)?);
    }
    scripts.extend(linux_services::guest_agent_script(info));
    plan.push(firstboot::step(tree, &scripts)?);
    Ok(plan)
}

/// The new name of an old disk device, from the volumes found on the disks.
pub fn storage_lookup(storage: &Storage) -> impl Fn(&str) -> Option<NewName> + '_ {
    move |dev: &str| {
        let (_, disk, part) = parse_disk_device(dev)?;
        if disk >= storage.disks.len() {
            return None;
        }
        let cands = storage.candidates();
        let uuid = spec::resolve(dev, &cands).and_then(|i| cands[i].uuid());
        Some(NewName {
            uuid,
            virtio: devnames::virtio_name(disk, part),
        })
    }
}

/// Expands one `DEVICE_NAME_FILES` pattern into existing guest paths.
fn expand(tree: &GuestRoot, pattern: &str) -> Result<Vec<String>> {
    let Some((dir, file_glob)) = pattern.rsplit_once('/') else {
        return Ok(vec![]);
    };
    if !dir.contains('*') && !file_glob.contains('*') {
        return Ok(if tree.exists(pattern)? {
            vec![pattern.to_string()]
        } else {
            vec![]
        });
    }
    // One `*` per component, in the directory or the file name.
    let mut dirs = vec![String::new()];
    for comp in dir.split('/').filter(|c| !c.is_empty()) {
        let mut next = Vec::new();
        for d in &dirs {
            let here = if d.is_empty() { "/".to_string() } else { d.clone() };
            if comp == "*" {
                match tree.read_dir(&here) {
                    Ok(es) => next.extend(es.into_iter().map(|e| format!("{d}/{}", e.name))),
                    Err(Error::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            } else {
                next.push(format!("{d}/{comp}"));
            }
        }
        dirs = next;
    }
    let (prefix, suffix) = file_glob.split_once('*').unwrap_or((file_glob, ""));
    let mut out = Vec::new();
    for d in dirs {
        let entries = match tree.read_dir(&d) {
            Ok(es) => es,
            Err(Error::NotFound(_)) => continue,
            Err(e) => return Err(e),
        };
        for e in entries {
            let matches = if file_glob.contains('*') {
                e.name.starts_with(prefix) && e.name.ends_with(suffix)
            } else {
                e.name == file_glob
            };
            if matches && e.file_type != crate::fs::FileType::Dir {
                out.push(format!("{d}/{}", e.name));
            }
        }
    }
    Ok(out)
}

/// Rewrites every existing file that `files` names (globs allowed), each real
/// path once even when several names lead to it: `rewrite` gets the real
/// path, the file's syntax tag and its text, and returns the new text when
/// it changes anything.
fn rewrite_configs<T: Copy>(
    tree: &GuestRoot,
    files: &[(&str, T)],
    mut rewrite: impl FnMut(&str, T, &str) -> Option<String>,
) -> Result<Vec<Edit>> {
    let mut edits = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (pattern, tag) in files {
        for path in expand(tree, pattern)? {
            // A symlinked config (grub.cfg -> ../boot/grub/grub.cfg) is edited once, at its real path.
            let real = tree.resolve(&path, true)?.guest_path;
            if !seen.insert(real.clone()) {
                continue;
            }
            let old = tree.read_file_max(&real, MAX_CONFIG)?;
            if let Some(new) = rewrite(&real, *tag, &String::from_utf8_lossy(&old)) {
                edits.push(Edit::WriteFile {
                    path: real,
                    old: Some(old),
                    new: new.into_bytes(),
                    mode: 0o644,
                });
            }
        }
    }
    Ok(edits)
}

/// Rewrites `/dev/sdX`-style names in fstab, crypttab, grub and BLS files.
pub fn device_names_step(storage: &Storage, tree: &GuestRoot) -> Result<Step> {
    let lookup = storage_lookup(storage);
    let mut notes = Vec::new();
    let mut edits = rewrite_configs(tree, DEVICE_NAME_FILES, |real, syntax, text| {
        let (new, changes) = devnames::rewrite(text, syntax, &lookup);
        for c in &changes {
            notes.push(format!("{real}:{}: {} -> {}", c.line, c.from, c.to));
        }
        (!changes.is_empty()).then_some(new)
    })?;
    for path in GRUBENV_FILES {
        if !tree.exists(path)? {
            continue;
        }
        let old = tree.read_file_max(path, MAX_CONFIG)?;
        let text = String::from_utf8_lossy(&old);
        let body = text.trim_end_matches('#');
        let (new_body, changes) = devnames::rewrite(body, Syntax::Cmdline, &lookup);
        if changes.is_empty() {
            continue;
        }
        if new_body.len() > old.len() {
            return Err(Error::unsupported(format!(
                "{path}: the rewritten environment block does not fit in {} bytes",
                old.len()
            )));
        }
        let mut new = new_body.into_bytes();
        new.resize(old.len(), b'#');
        for c in &changes {
            notes.push(format!("{path}:{}: {} -> {}", c.line, c.from, c.to));
        }
        edits.push(Edit::WriteFile {
            path: path.to_string(),
            old: Some(old),
            new,
            mode: 0o644,
        });
    }
    Ok(Step {
        id: "device-names".into(),
        summary: "disk device names that change on virtio become UUID= (or /dev/vdX)".into(),
        edits,
        notes,
    })
}

/// Appends virtio drivers to every kernel's initramfs.
pub fn initramfs_step(tree: &GuestRoot, kernels: &[KernelRef], rules: &VirtioRules) -> Result<Step> {
    let mut edits = Vec::new();
    let mut notes = Vec::new();
    for k in kernels {
        let Some(initrd) = &k.initramfs else {
            notes.push(format!("kernel {} has no initramfs; nothing to add", k.version));
            continue;
        };
        match virtio_initramfs::payload(tree, &k.version, &k.initramfs_tree, rules)? {
            Payload::Skip(why) => notes.push(format!("kernel {}: {why}", k.version)),
            Payload::Append {
                archive,
                modules,
                missing,
                ..
            } => {
                if !missing.is_empty() {
                    notes.push(format!("kernel {}: has no {}", k.version, missing.join(", ")));
                }
                let size = tree.stat(initrd)?.size;
                let mut data = vec![0u8; append_padding(size)];
                data.extend_from_slice(&archive);
                notes.push(format!(
                    "kernel {}: {} modules added to {initrd}",
                    k.version,
                    modules.len()
                ));
                edits.push(Edit::Append {
                    path: tree.resolve(initrd, true)?.guest_path,
                    len: data.len() as u64,
                    data,
                });
            }
        }
    }
    Ok(Step {
        id: "initramfs".into(),
        summary: "virtio drivers appended to each initramfs as a second cpio archive".into(),
        edits,
        notes,
    })
}

/// Xen's and Hyper-V's console names, which do not exist on KVM's serial port.
const FOREIGN_CONSOLES: &[&str] = &["hvc0", "xvc0"];

/// Bootloader files whose kernel command lines may name a console.
const CMDLINE_FILES: &[&str] = &[
    "/etc/default/grub",
    "/boot/grub/grub.cfg",
    "/boot/grub2/grub.cfg",
    "/boot/grub/menu.lst",
    "/boot/grub/grub.conf",
    "/boot/loader/entries/*.conf",
    "/etc/kernel/cmdline",
];

/// Replaces `console=hvc0` / `console=xvc0` with `console=ttyS0`.
pub fn rewrite_console(text: &str) -> Option<String> {
    let mut changed = false;
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("console=") {
        let (head, tail) = rest.split_at(i + "console=".len());
        out.push_str(head);
        let name: String = tail.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
        if FOREIGN_CONSOLES.contains(&name.as_str()) {
            out.push_str("ttyS0");
            changed = true;
        } else {
            out.push_str(&name);
        }
        rest = &tail[name.len()..];
    }
    out.push_str(rest);
    changed.then_some(out)
}

/// Points Xen/Hyper-V serial consoles at ttyS0.
pub fn console_step(tree: &GuestRoot) -> Result<Step> {
    let files: Vec<(&str, ())> = CMDLINE_FILES.iter().map(|p| (*p, ())).collect();
    let edits = rewrite_configs(tree, &files, |_, (), text| rewrite_console(text))?;
    Ok(Step {
        id: "console".into(),
        summary: "serial console hvc0/xvc0 becomes ttyS0".into(),
        edits,
        notes: vec![],
    })
}

/// SELinux guests relabel on first boot, since files were written without labels.
pub fn selinux_step(tree: &GuestRoot) -> Result<Step> {
    let mut edits = Vec::new();
    if let Some(cfg) = tree.read_text_opt("/etc/selinux/config", 1 << 20)? {
        let enabled = cfg.lines().any(|l| {
            let l = l.trim();
            l.starts_with("SELINUX=") && !l.ends_with("disabled")
        });
        if enabled && !tree.exists("/.autorelabel")? {
            edits.push(Edit::WriteFile {
                path: "/.autorelabel".into(),
                old: None,
                new: Vec::new(),
                mode: 0o644,
            });
        }
    }
    Ok(Step {
        id: "selinux".into(),
        summary: "SELinux relabels the filesystem on first boot".into(),
        edits,
        notes: vec![],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::memfs::MemFs;
    use std::sync::Arc;

    #[test]
    fn consoles() {
        assert_eq!(
            rewrite_console("linux /vmlinuz root=/dev/xvda1 console=hvc0 console=tty0").as_deref(),
            Some("linux /vmlinuz root=/dev/xvda1 console=ttyS0 console=tty0")
        );
        assert_eq!(
            rewrite_console("console=xvc0,115200n8").as_deref(),
            Some("console=ttyS0,115200n8")
        );
        assert_eq!(rewrite_console("console=ttyS0 console=hvc01"), None);
    }

    #[test]
    fn selinux_autorelabel() {
        let mut fs = MemFs::new();
        fs.file(
            "/etc/selinux/config",
            b"SELINUX=enforcing\nSELINUXTYPE=targeted\n",
        );
        let s = selinux_step(&GuestRoot::new(Arc::new(fs), "sda1")).unwrap();
        assert_eq!(s.edits.len(), 1);
        let mut fs = MemFs::new();
        fs.file("/etc/selinux/config", b"SELINUX=disabled\n");
        assert!(selinux_step(&GuestRoot::new(Arc::new(fs), "sda1"))
            .unwrap()
            .edits
            .is_empty());
    }

    #[test]
    fn patterns_expand_to_existing_files() {
        let mut fs = MemFs::new();
        fs.file("/etc/fstab", b"x");
        fs.file("/boot/loader/entries/a.conf", b"x");
        fs.file("/boot/loader/entries/b.conf", b"x");
        fs.file("/boot/loader/entries/readme.txt", b"x");
        fs.file("/boot/efi/EFI/debian/grub.cfg", b"x");
        fs.file("/boot/efi/EFI/BOOT/BOOTX64.EFI", b"x");
        let t = GuestRoot::new(Arc::new(fs), "sda1");
        assert_eq!(expand(&t, "/etc/fstab").unwrap(), vec!["/etc/fstab"]);
        assert!(expand(&t, "/etc/crypttab").unwrap().is_empty());
        assert_eq!(
            expand(&t, "/boot/loader/entries/*.conf").unwrap(),
            vec!["/boot/loader/entries/a.conf", "/boot/loader/entries/b.conf"]
        );
        assert_eq!(
            expand(&t, "/boot/efi/EFI/*/grub.cfg").unwrap(),
            vec!["/boot/efi/EFI/debian/grub.cfg"]
        );
    }
}
