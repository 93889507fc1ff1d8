//! Installed kernels: image, version, module tree, initramfs, and where the
//! virtio drivers (listed in drivers-db/linux/virtio-modules.toml) are found.

use super::Ctx;
use crate::guest::initramfs::{self, GuestFile};
use serde::{Deserialize, Serialize};

/// Most kernels reported.
pub const MAX_KERNELS: usize = 64;

/// Largest modules.dep / modules.builtin read.
pub const MAX_MODULES_LIST: u64 = 16 << 20;

/// The module list from drivers-db.
const VIRTIO_DB: &str = include_str!("../../../drivers-db/linux/virtio-modules.toml");

#[derive(Deserialize)]
struct Db {
    module: Vec<DbModule>,
}

/// One module of interest from drivers-db/linux/virtio-modules.toml.
#[derive(Debug, Clone, Deserialize)]
pub struct DbModule {
    /// Module name with underscores ("virtio_blk").
    pub name: String,
    /// What it drives.
    pub purpose: String,
    /// Whether the initramfs must have it to find the root disk.
    pub boot: bool,
}

/// The virtio modules inspection looks for.
pub fn virtio_modules() -> Vec<DbModule> {
    toml::from_str::<Db>(VIRTIO_DB)
        .map(|d| d.module)
        .unwrap_or_default()
}

/// Where one driver is found for one kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModuleStatus {
    /// Module name ("virtio_blk").
    pub name: String,
    /// Compiled into the kernel (listed in modules.builtin).
    pub builtin: bool,
    /// Module files under the kernel's module directory (guest paths).
    pub module_paths: Vec<String>,
    /// Present in the initramfs; `None` when there is no readable initramfs.
    pub in_initramfs: Option<bool>,
}

/// One installed kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Kernel {
    /// Guest path of the kernel image.
    pub path: String,
    /// Version from the file name ("6.1.0-18-amd64", or "lts" for Alpine's vmlinuz-lts).
    pub version: String,
    /// The version string inside an x86 bzImage header, when there is one.
    pub version_string: Option<String>,
    /// The kernel's module directory, if present.
    pub modules_dir: Option<String>,
    /// Guest path of its initramfs, if found.
    pub initramfs: Option<String>,
    /// The virtio drivers.
    pub modules: Vec<ModuleStatus>,
}

/// Module name of a path or modules.dep entry ("kernel/x/virtio-blk.ko.xz" gives "virtio_blk").
pub fn module_name(path: &str) -> Option<String> {
    let base = path.rsplit('/').next()?;
    let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|s| base.strip_suffix(s))?;
    Some(stem.replace('-', "_"))
}

/// Module names listed in modules.builtin text.
pub fn parse_builtin(text: &str) -> Vec<String> {
    text.lines().filter_map(|l| module_name(l.trim())).collect()
}

/// Module paths (relative to the module dir) listed in modules.dep text.
pub fn parse_modules_dep(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split_once(':').map(|(p, _)| p.trim().to_string()))
        .filter(|p| module_name(p).is_some())
        .collect()
}

/// Reads the version string of an x86 bzImage ("6.1.0-18-amd64 (debian-kernel@...) #1 ...").
fn bzimage_version(ctx: &Ctx, path: &str) -> Option<String> {
    let h = ctx.root.read_range(path, 0x200, 0x20).ok()?;
    if h.len() < 0x10 || &h[2..6] != b"HdrS" {
        return None;
    }
    let ptr = u64::from(u16::from_le_bytes([h[0x0e], h[0x0f]]));
    if ptr == 0 {
        return None;
    }
    let s = ctx.root.read_range(path, ptr + 0x200, 256).ok()?;
    let end = s.iter().position(|&c| c == 0)?;
    let text = String::from_utf8_lossy(&s[..end]).trim().to_string();
    (!text.is_empty()).then_some(text)
}

fn find_modules_dir(version: &str, dirs: &[String]) -> Option<String> {
    if dirs.iter().any(|d| d == version) {
        return Some(format!("/lib/modules/{version}"));
    }
    // Alpine names kernels by flavour: vmlinuz-lts goes with 6.6.8-0-lts.
    let suffix = format!("-{version}");
    dirs.iter()
        .find(|d| d.ends_with(&suffix))
        .map(|d| format!("/lib/modules/{d}"))
}

fn find_initramfs(ctx: &mut Ctx, version: &str, modules_dir: Option<&str>) -> Option<String> {
    let mut candidates = vec![
        format!("/boot/initrd.img-{version}"),
        format!("/boot/initramfs-{version}.img"),
        format!("/boot/initrd-{version}"),
        format!("/boot/initramfs-{version}"),
    ];
    if let Some(m) = modules_dir {
        candidates.push(format!("{m}/initramfs.img"));
    }
    candidates.into_iter().find(|p| ctx.is_file(p))
}

/// Finds every installed kernel and where its virtio drivers are.
pub(crate) fn detect(ctx: &mut Ctx, want_initramfs: bool) -> Vec<Kernel> {
    let module_dirs: Vec<String> = ctx.list("/lib/modules").into_iter().map(|e| e.name).collect();
    let mut found: Vec<(String, String)> = Vec::new();
    for e in ctx.list("/boot") {
        for prefix in ["vmlinuz-", "vmlinux-", "Image-"] {
            if let Some(v) = e.name.strip_prefix(prefix) {
                let path = format!("/boot/{}", e.name);
                if ctx.is_file(&path) {
                    found.push((path, v.to_string()));
                }
            }
        }
    }
    for d in &module_dirs {
        let path = format!("/lib/modules/{d}/vmlinuz");
        if !found.iter().any(|(_, v)| v == d) && ctx.is_file(&path) {
            found.push((path, d.clone()));
        }
    }
    if found.len() > MAX_KERNELS {
        ctx.warn(format!(
            "{} kernels found, only {MAX_KERNELS} inspected",
            found.len()
        ));
        found.truncate(MAX_KERNELS);
    }
    let wanted = virtio_modules();
    found
        .into_iter()
        .map(|(path, version)| {
            let modules_dir = find_modules_dir(&version, &module_dirs);
            let initramfs = find_initramfs(ctx, &version, modules_dir.as_deref());
            let version_string = bzimage_version(ctx, &path);
            let modules = module_status(
                ctx,
                &wanted,
                modules_dir.as_deref(),
                initramfs.as_deref(),
                want_initramfs,
            );
            Kernel {
                path,
                version,
                version_string,
                modules_dir,
                initramfs,
                modules,
            }
        })
        .collect()
}

fn module_status(
    ctx: &mut Ctx,
    wanted: &[DbModule],
    modules_dir: Option<&str>,
    initramfs: Option<&str>,
    want_initramfs: bool,
) -> Vec<ModuleStatus> {
    let mut builtin = Vec::new();
    let mut available: Vec<String> = Vec::new();
    if let Some(dir) = modules_dir {
        if let Some(t) = ctx.text_max(&format!("{dir}/modules.builtin"), MAX_MODULES_LIST) {
            builtin = parse_builtin(&t);
        }
        match ctx.text_max(&format!("{dir}/modules.dep"), MAX_MODULES_LIST) {
            Some(t) => {
                available = parse_modules_dep(&t)
                    .into_iter()
                    .map(|p| format!("{dir}/{p}"))
                    .collect()
            }
            None => {
                for sub in ["block", "scsi", "virtio", "net"] {
                    let d = format!("{dir}/kernel/drivers/{sub}");
                    for e in ctx.list(&d) {
                        available.push(format!("{d}/{}", e.name));
                    }
                }
            }
        }
    }
    let in_initramfs: Option<Vec<String>> = match initramfs {
        Some(p) if want_initramfs => match GuestFile::open(ctx.root, p).and_then(|f| initramfs::list(&f)) {
            Ok(listing) => Some(
                listing
                    .entries
                    .iter()
                    .filter_map(|e| module_name(&e.name))
                    .collect(),
            ),
            Err(e) => {
                ctx.warn(format!("initramfs {p}: {e}"));
                None
            }
        },
        _ => None,
    };
    wanted
        .iter()
        .map(|m| ModuleStatus {
            name: m.name.clone(),
            builtin: builtin.contains(&m.name),
            module_paths: available
                .iter()
                .filter(|p| module_name(p).as_deref() == Some(m.name.as_str()))
                .cloned()
                .collect(),
            in_initramfs: in_initramfs.as_ref().map(|l| l.contains(&m.name)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names() {
        assert_eq!(
            module_name("kernel/drivers/block/virtio_blk.ko.xz").as_deref(),
            Some("virtio_blk")
        );
        assert_eq!(module_name("/x/virtio-scsi.ko").as_deref(), Some("virtio_scsi"));
        assert_eq!(module_name("virtio_net.ko.zst").as_deref(), Some("virtio_net"));
        assert_eq!(module_name("modules.dep"), None);
        assert_eq!(
            parse_modules_dep("kernel/drivers/net/virtio_net.ko: kernel/net/core/failover.ko\nbogus\n"),
            ["kernel/drivers/net/virtio_net.ko"]
        );
        assert_eq!(
            parse_builtin("kernel/drivers/virtio/virtio_pci.ko\n"),
            ["virtio_pci"]
        );
    }

    #[test]
    fn drivers_db_parses() {
        let m = virtio_modules();
        let names: Vec<_> = m.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["virtio_pci", "virtio_blk", "virtio_scsi", "virtio_net"]);
        assert!(m[1].boot && !m[3].boot);
    }
}
