//! The human-readable rendering of an [`Inspection`](super::Inspection).

use super::Inspection;
use std::fmt::Write;

/// Renders the report `v2x inspect` prints without `--json`.
pub fn render(ins: &Inspection) -> String {
    let mut s = String::new();
    for d in &ins.disks {
        let _ = writeln!(
            s,
            "disk {}: {} ({}, {} bytes, {} partition table)",
            d.name, d.path, d.format, d.virtual_size, d.partition_table
        );
    }
    for v in &ins.volumes {
        let what = match (&v.filesystem, &v.error) {
            (Some(fs), _) => {
                let mut t = fs.fs_type.clone();
                if let Some(l) = &fs.label {
                    let _ = write!(t, " label={l}");
                }
                if let Some(u) = &fs.uuid {
                    let _ = write!(t, " uuid={u}");
                }
                for n in &fs.notes {
                    let _ = write!(t, " [{n}]");
                }
                t
            }
            (None, Some(e)) => format!("unreadable: {e}"),
            (None, None) => serde_json::to_value(&v.content)
                .ok()
                .and_then(|c| c.get("type").and_then(|t| t.as_str()).map(str::to_string))
                .unwrap_or_else(|| "unknown".into()),
        };
        let _ = writeln!(s, "  {:<16} {:>14} bytes  {what}", v.name, v.size);
    }
    if ins.roots.is_empty() {
        let _ = writeln!(s, "no operating system found");
    }
    for r in &ins.roots {
        let _ = writeln!(s);
        let sub = r
            .subvolume
            .as_deref()
            .map(|x| format!(" (subvolume {x})"))
            .unwrap_or_default();
        let _ = writeln!(s, "root #{} on {}{sub}: {}", r.rank, r.volume, r.os_type);
        let field = |s: &mut String, k: &str, v: &Option<String>| {
            if let Some(v) = v {
                let _ = writeln!(s, "  {k:<14} {v}");
            }
        };
        field(&mut s, "product", &r.product_name);
        field(&mut s, "distro", &r.distro);
        field(&mut s, "version", &r.version);
        field(&mut s, "arch", &r.arch);
        field(&mut s, "hostname", &r.hostname);
        let _ = writeln!(s, "  {:<14} {} ({})", "firmware", r.firmware, r.firmware_reason);
        for m in &r.mountpoints {
            let _ = writeln!(
                s,
                "  mount          {:<12} {} {}",
                m.mountpoint,
                m.volume.as_deref().unwrap_or("?"),
                m.spec.as_deref().map(|x| format!("({x})")).unwrap_or_default()
            );
        }
        for w in &r.warnings {
            let _ = writeln!(s, "  warning: {w}");
        }
    }
    for w in &ins.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    s
}
