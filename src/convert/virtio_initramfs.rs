//! Virtio drivers for a Linux initramfs, without running the guest's
//! mkinitramfs or dracut: the guest's own modules for that kernel (plus
//! their `modules.dep` closure and the module index files) go into a second
//! newc archive appended to the existing initramfs.
//!
//! Which modules to add is data: `drivers-db/linux/virtio-modules.toml`.

use super::cpio::{ArchiveTree, CpioWriter};
use super::kmod_index;
use crate::fs::guest::GuestRoot;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use v2x_formats::{Error, Result};

/// The rules file, compiled in.
const RULES_TOML: &str = include_str!("../../drivers-db/linux/virtio-modules.toml");

/// Largest modules.dep / modules.builtin we read.
pub const MAX_MODULE_INDEX: u64 = 64 << 20;
/// Largest single module file we copy.
pub const MAX_MODULE_FILE: u64 = 64 << 20;
/// Most modules one closure may pull in.
pub const MAX_CLOSURE: usize = 512;

/// `drivers-db/linux/virtio-modules.toml`.
#[derive(Debug, Clone, Deserialize)]
pub struct VirtioRules {
    /// The `[initramfs]` table.
    pub initramfs: InitramfsRules,
}

/// What goes into the initramfs.
#[derive(Debug, Clone, Deserialize)]
pub struct InitramfsRules {
    /// Top-level modules to add.
    pub modules: Vec<String>,
    /// Modules the kernel must have (built in or as modules).
    pub required: Vec<String>,
    /// Disk drivers, of which the kernel must have at least one.
    pub disk: Vec<String>,
    /// Module index files copied unchanged.
    pub copy_index_files: Vec<String>,
}

impl VirtioRules {
    /// The rules shipped in drivers-db.
    pub fn builtin() -> Self {
        toml::from_str(RULES_TOML).expect("drivers-db/linux/virtio-modules.toml is valid (tested)")
    }
}

/// Canonical module name: basename without `.ko[.xz|.zst|.gz]`, `-` as `_`.
pub fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let stem = base.split(".ko").next().unwrap_or(base);
    stem.replace('-', "_")
}

/// The parsed `modules.dep` of one kernel: module name → (path, dependency paths).
#[derive(Debug, Default)]
pub struct ModuleDeps {
    by_name: BTreeMap<String, (String, Vec<String>)>,
}

impl ModuleDeps {
    /// Parses `modules.dep` text ("path: dep dep ...").
    pub fn parse(text: &str) -> Self {
        let mut by_name = BTreeMap::new();
        for line in text.lines() {
            let Some((path, deps)) = line.split_once(':') else {
                continue;
            };
            let path = path.trim();
            if path.is_empty() {
                continue;
            }
            let deps = deps.split_whitespace().map(str::to_string).collect();
            by_name.insert(module_name(path), (path.to_string(), deps));
        }
        Self { by_name }
    }

    /// Path (relative to the modules dir) of a module, if the kernel has it.
    pub fn path(&self, name: &str) -> Option<&str> {
        self.by_name.get(name).map(|(p, _)| p.as_str())
    }

    /// The modules named plus everything they depend on, as paths, deduplicated.
    pub fn closure(&self, names: &[String]) -> Result<Vec<String>> {
        let mut out = BTreeSet::new();
        for n in names {
            if let Some((path, deps)) = self.by_name.get(n) {
                out.insert(path.clone());
                // modules.dep lists the full transitive closure already.
                out.extend(deps.iter().cloned());
            }
            if out.len() > MAX_CLOSURE {
                return Err(Error::LimitExceeded {
                    what: "modules in the virtio closure",
                    value: out.len() as u64,
                    max: MAX_CLOSURE as u64,
                });
            }
        }
        Ok(out.into_iter().collect())
    }
}

/// The lines of `text` that `keep` accepts, each ending in a newline.
fn filter_lines(text: &str, keep: impl Fn(&str) -> bool) -> String {
    let mut out = String::new();
    for l in text.lines().filter(|l| keep(l)) {
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// What to append to one kernel's initramfs.
#[derive(Debug)]
pub enum Payload {
    /// Nothing to do, and why.
    Skip(String),
    /// Append `archive` after `padding` zero bytes; `modules` lists what it adds.
    Append {
        /// The newc archive.
        archive: Vec<u8>,
        /// Module paths (relative to /lib/modules/KVER) added.
        modules: Vec<String>,
        /// Index files copied.
        index_files: Vec<String>,
        /// Wanted drivers this kernel does not have at all.
        missing: Vec<String>,
    },
}

/// Builds the archive that gives kernel `kver` its virtio drivers.
/// `original` lists the existing initramfs, so present modules are not
/// duplicated and no symlink of it is replaced.
pub fn payload(root: &GuestRoot, kver: &str, original: &ArchiveTree, rules: &VirtioRules) -> Result<Payload> {
    let moddir = format!("/lib/modules/{kver}");
    let builtin: BTreeSet<String> =
        match root.read_text_opt(&format!("{moddir}/modules.builtin"), MAX_MODULE_INDEX)? {
            Some(t) => t.lines().map(module_name).collect(),
            None => BTreeSet::new(),
        };
    let Some(dep_text) = root.read_text_opt(&format!("{moddir}/modules.dep"), MAX_MODULE_INDEX)? else {
        return Ok(Payload::Skip(format!("{moddir}/modules.dep is missing")));
    };
    let deps = ModuleDeps::parse(&dep_text);
    let in_initramfs = |path: &str| {
        let p = format!("lib/modules/{kver}/{path}");
        original
            .real_path(&p)
            .map(|r| original.contains(&r))
            .unwrap_or(false)
            || original.contains(&p)
    };
    let have = |m: &String| builtin.contains(m) || deps.path(m).is_some();
    let missing: Vec<String> = rules
        .initramfs
        .required
        .iter()
        .chain(&rules.initramfs.disk)
        .filter(|m| !have(m))
        .cloned()
        .collect();
    if rules.initramfs.required.iter().any(|m| !have(m)) || !rules.initramfs.disk.iter().any(have) {
        return Err(Error::unsupported(format!(
            "kernel {kver} lacks virtio drivers {missing:?} (neither built in nor modules), so it could not find its disk on virtio"
        )));
    }
    let ready = rules
        .initramfs
        .required
        .iter()
        .chain(&rules.initramfs.disk)
        .filter(|m| have(m))
        .all(|m| builtin.contains(m) || deps.path(m).is_some_and(in_initramfs));
    if ready {
        return Ok(Payload::Skip(
            "virtio drivers are built in or already in the initramfs".into(),
        ));
    }
    let wanted: Vec<String> = rules
        .initramfs
        .modules
        .iter()
        .filter(|m| !builtin.contains(*m) && deps.path(m).is_some())
        .cloned()
        .collect();
    let mut w = CpioWriter::new(0);
    let mut modules = Vec::new();
    for path in deps.closure(&wanted)? {
        if in_initramfs(&path) {
            continue;
        }
        let data = root.read_file_max(&format!("{moddir}/{path}"), MAX_MODULE_FILE)?;
        let real = original.real_path(&format!("lib/modules/{kver}/{path}"))?;
        w.file(&real, 0o644, &data, original)?;
        modules.push(path);
    }
    // The modules the initramfs will hold: what it had plus what we add.
    let mut held: BTreeSet<String> = modules.iter().map(|p| module_name(p)).collect();
    let prefixes = [
        format!("lib/modules/{kver}/"),
        original
            .real_path(&format!("lib/modules/{kver}/x"))?
            .trim_end_matches('x')
            .to_string(),
    ];
    for p in original.paths() {
        if prefixes.iter().any(|pre| p.starts_with(pre.as_str())) && p.contains(".ko") {
            held.insert(module_name(p));
        }
    }
    let keep = |name: &str| held.contains(name);
    let mut index_files = Vec::new();
    let mut put = |w: &mut CpioWriter, name: &str, data: &[u8]| -> Result<()> {
        let real = original.real_path(&format!("lib/modules/{kver}/{name}"))?;
        w.file(&real, 0o644, data, original)?;
        index_files.push(name.to_string());
        Ok(())
    };
    put(
        &mut w,
        "modules.dep",
        filter_lines(&dep_text, |l| {
            l.split_once(':').is_some_and(|(p, _)| keep(&module_name(p)))
        })
        .as_bytes(),
    )?;
    put(
        &mut w,
        "modules.dep.bin",
        &kmod_index::dep_index(&dep_text, &keep)?,
    )?;
    for (text_name, bin_name) in [
        ("modules.alias", "modules.alias.bin"),
        ("modules.symbols", "modules.symbols.bin"),
    ] {
        if let Some(text) = root.read_text_opt(&format!("{moddir}/{text_name}"), MAX_MODULE_INDEX)? {
            let alias_keep = |l: &str| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() == 3 && f[0] == "alias" && keep(f[2])
            };
            put(&mut w, text_name, filter_lines(&text, alias_keep).as_bytes())?;
            put(&mut w, bin_name, &kmod_index::alias_index(&text, &keep)?)?;
        }
    }
    if let Some(order) = root.read_text_opt(&format!("{moddir}/modules.order"), MAX_MODULE_INDEX)? {
        put(
            &mut w,
            "modules.order",
            filter_lines(&order, |l| keep(&module_name(l))).as_bytes(),
        )?;
    }
    for f in &rules.initramfs.copy_index_files {
        match root.read_file_max(&format!("{moddir}/{f}"), MAX_MODULE_INDEX) {
            Ok(data) => put(&mut w, f, &data)?,
            Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Payload::Append {
        archive: w.finish(),
        modules,
        index_files,
        missing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::cpio::Node;
    use crate::fs::memfs::MemFs;
    use std::sync::Arc;

    const K: &str = "6.1.0-18-amd64";

    fn guest(builtin: &str) -> GuestRoot {
        let mut fs = MemFs::new();
        fs.symlink("/lib", "usr/lib");
        let m = format!("/usr/lib/modules/{K}");
        fs.file(&format!("{m}/kernel/drivers/block/virtio_blk.ko.xz"), b"blk");
        fs.file(&format!("{m}/kernel/drivers/scsi/virtio_scsi.ko.xz"), b"scsi");
        fs.file(&format!("{m}/kernel/drivers/virtio/virtio_pci.ko.xz"), b"pci");
        fs.file(
            &format!("{m}/kernel/drivers/virtio/virtio_pci_modern_dev.ko.xz"),
            b"modern",
        );
        fs.file(&format!("{m}/kernel/drivers/virtio/virtio_ring.ko.xz"), b"ring");
        fs.file(&format!("{m}/kernel/drivers/virtio/virtio.ko.xz"), b"virtio");
        fs.file(&format!("{m}/kernel/drivers/net/virtio_net.ko.xz"), b"net");
        fs.file(&format!("{m}/kernel/net/core/failover.ko.xz"), b"failover");
        fs.file(
            &format!("{m}/modules.dep"),
            b"kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz\n\
kernel/drivers/scsi/virtio_scsi.ko.xz: kernel/drivers/virtio/virtio.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz\n\
kernel/drivers/virtio/virtio_pci.ko.xz: kernel/drivers/virtio/virtio_pci_modern_dev.ko.xz kernel/drivers/virtio/virtio.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz\n\
kernel/drivers/virtio/virtio_pci_modern_dev.ko.xz:\n\
kernel/drivers/virtio/virtio_ring.ko.xz:\n\
kernel/drivers/virtio/virtio.ko.xz:\n\
kernel/drivers/net/virtio_net.ko.xz: kernel/net/core/failover.ko.xz kernel/drivers/virtio/virtio.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz\n\
kernel/net/core/failover.ko.xz:\n",
        );
        fs.file(&format!("{m}/modules.builtin"), builtin.as_bytes());
        fs.file(
            &format!("{m}/modules.alias"),
            b"alias virtio:d00000002v* virtio_blk\nalias pci:v000015ADd000007C0sv*sd*bc*sc*i* vmw_pvscsi\n",
        );
        GuestRoot::new(Arc::new(fs), "sda1")
    }

    fn initramfs_tree() -> ArchiveTree {
        let mut t = ArchiveTree::new();
        t.insert("usr", Node::Dir);
        t.insert("usr/lib", Node::Dir);
        t.insert("lib", Node::Symlink("usr/lib".into()));
        t
    }

    #[test]
    fn rules_parse() {
        let r = VirtioRules::builtin();
        assert!(r.initramfs.modules.iter().any(|m| m == "virtio_blk"));
    }

    #[test]
    fn modular_kernel_gets_closure_and_index() {
        let p = payload(
            &guest("kernel/fs/ext4/ext4.ko\n"),
            K,
            &initramfs_tree(),
            &VirtioRules::builtin(),
        )
        .unwrap();
        let Payload::Append {
            modules,
            index_files,
            archive,
            ..
        } = p
        else {
            panic!("expected an archive")
        };
        assert!(
            modules.contains(&"kernel/net/core/failover.ko.xz".to_string()),
            "{modules:?}"
        );
        assert_eq!(modules.len(), 8);
        assert_eq!(
            index_files,
            vec![
                "modules.dep",
                "modules.dep.bin",
                "modules.alias",
                "modules.alias.bin",
                "modules.builtin"
            ]
        );
        let text = String::from_utf8_lossy(&archive);
        assert!(
            !text.contains("vmw_pvscsi"),
            "modules outside the initramfs are left out of its index"
        );
        let text = String::from_utf8_lossy(&archive);
        assert!(text.contains("usr/lib/modules/6.1.0-18-amd64/kernel/drivers/block/virtio_blk.ko.xz"));
        assert!(
            !text.contains("\0lib/modules"),
            "nothing may be written through the lib symlink"
        );
    }

    #[test]
    fn builtin_virtio_is_left_alone() {
        let b = "kernel/drivers/virtio/virtio_pci.ko\nkernel/drivers/block/virtio_blk.ko\nkernel/drivers/scsi/virtio_scsi.ko\n";
        let p = payload(&guest(b), K, &initramfs_tree(), &VirtioRules::builtin()).unwrap();
        assert!(matches!(p, Payload::Skip(_)), "{p:?}");
    }

    #[test]
    fn names() {
        assert_eq!(
            module_name("kernel/drivers/virtio/virtio_pci-legacy.ko.zst"),
            "virtio_pci_legacy"
        );
        assert_eq!(module_name("virtio_blk.ko"), "virtio_blk");
    }
}
