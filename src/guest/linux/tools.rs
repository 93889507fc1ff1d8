//! Hypervisor guest tools, detected from the data in drivers-db/linux/hypervisor-tools.toml.

use super::packages::Package;
use super::Ctx;
use serde::{Deserialize, Serialize};

const DB: &str = include_str!("../../../drivers-db/linux/hypervisor-tools.toml");

/// Where services are looked for.
const SERVICE_DIRS: &[&str] = &[
    "/etc/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
    "/etc/init.d",
    "/etc/rc.d/init.d",
];

#[derive(Deserialize)]
struct Db {
    tool: Vec<ToolSpec>,
}

/// One tool as drivers-db describes it.
#[derive(Debug, Clone, Deserialize)]
pub struct ToolSpec {
    /// Stable id ("open-vm-tools").
    pub id: String,
    /// Human name.
    pub name: String,
    /// "vmware", "virtualbox", "xen", "hyperv".
    pub hypervisor: String,
    /// Package names.
    pub packages: Vec<String>,
    /// Files or directories only this tool installs.
    pub paths: Vec<String>,
    /// systemd units or SysV scripts.
    pub services: Vec<String>,
}

/// The tool specs of drivers-db/linux/hypervisor-tools.toml.
pub fn tool_specs() -> Vec<ToolSpec> {
    toml::from_str::<Db>(DB).map(|d| d.tool).unwrap_or_default()
}

/// A hypervisor tool found in the guest, with the evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HypervisorTool {
    /// Stable id from drivers-db.
    pub id: String,
    /// Human name.
    pub name: String,
    /// Which hypervisor it serves.
    pub hypervisor: String,
    /// Installed packages of the tool.
    pub packages: Vec<String>,
    /// Paths of the tool that exist.
    pub paths: Vec<String>,
    /// Service files (unit files or init scripts) of the tool that exist.
    pub services: Vec<String>,
}

fn matching_paths(ctx: &mut Ctx, pattern: &str) -> Vec<String> {
    let Some(prefix) = pattern.strip_suffix('*') else {
        return if ctx.exists(pattern) {
            vec![pattern.to_string()]
        } else {
            Vec::new()
        };
    };
    let (dir, start) = prefix.rsplit_once('/').unwrap_or(("", prefix));
    let dir = if dir.is_empty() { "/" } else { dir };
    ctx.list(dir)
        .into_iter()
        .filter(|e| e.name.starts_with(start))
        .map(|e| format!("{}/{}", dir.trim_end_matches('/'), e.name))
        .collect()
}

/// Finds the tools of `specs` by installed package, path or service file.
pub(crate) fn detect(ctx: &mut Ctx, installed: &[Package]) -> Vec<HypervisorTool> {
    let mut out = Vec::new();
    for spec in tool_specs() {
        let packages: Vec<String> = spec
            .packages
            .iter()
            .filter(|p| installed.iter().any(|i| &i.name == *p))
            .cloned()
            .collect();
        let paths: Vec<String> = spec.paths.iter().flat_map(|p| matching_paths(ctx, p)).collect();
        let mut services = Vec::new();
        for s in &spec.services {
            for d in SERVICE_DIRS {
                let p = format!("{d}/{s}");
                if ctx.lexists(&p) {
                    services.push(p);
                }
            }
        }
        if !packages.is_empty() || !paths.is_empty() || !services.is_empty() {
            out.push(HypervisorTool {
                id: spec.id,
                name: spec.name,
                hypervisor: spec.hypervisor,
                packages,
                paths,
                services,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db_parses_and_covers_every_hypervisor() {
        let specs = tool_specs();
        let hv: Vec<_> = specs.iter().map(|s| s.hypervisor.as_str()).collect();
        for want in ["vmware", "virtualbox", "xen", "hyperv"] {
            assert!(hv.contains(&want), "{want}");
        }
        assert!(specs
            .iter()
            .all(|s| !s.packages.is_empty() && !s.paths.is_empty()));
    }
}
