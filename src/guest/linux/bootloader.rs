//! The bootloader: GRUB 2 (grub.cfg menu entries, submenus, BLS snippets,
//! grubenv), GRUB legacy, systemd-boot and extlinux/syslinux; its entries and
//! which one boots by default.

use super::packages::Package;
use super::Ctx;
use serde::Serialize;
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// Most menu entries kept from one configuration.
pub const MAX_BOOT_ENTRIES: usize = 1024;

/// Deepest submenu nesting followed.
pub const MAX_MENU_DEPTH: usize = 16;

/// The recognised bootloader.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Bootloader {
    /// "grub2", "grub-legacy", "systemd-boot", "extlinux" or "syslinux".
    pub kind: String,
    /// "bios" or "efi" where it can be told.
    pub flavour: Option<String>,
    /// Guest path of the configuration read.
    pub config_path: String,
    /// Title of the default entry.
    pub default_title: Option<String>,
    /// Guest path of the default kernel.
    pub default_kernel: Option<String>,
    /// Kernel command line of the default entry.
    pub default_cmdline: Option<String>,
    /// All entries, in menu order.
    pub entries: Vec<BootEntry>,
}

/// One boot menu entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BootEntry {
    /// Title shown in the menu.
    pub title: String,
    /// Entry id (grub `--id`/`$menuentry_id_option`, BLS file name, extlinux label).
    pub id: Option<String>,
    /// Title of the enclosing submenu, if any.
    pub submenu: Option<String>,
    /// Kernel path as written in the configuration.
    pub kernel: Option<String>,
    /// Initrd path as written.
    pub initrd: Option<String>,
    /// Kernel command line.
    pub cmdline: Option<String>,
}

/// Splits a grub script line into words: quotes and backslashes are removed,
/// `$var` text is kept as written.
pub fn grub_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for n in chars.by_ref() {
                    if n == '\'' {
                        break;
                    }
                    cur.push(n);
                }
            }
            '"' => {
                in_word = true;
                while let Some(n) = chars.next() {
                    match n {
                        '"' => break,
                        '\\' => {
                            if let Some(m) = chars.next() {
                                cur.push(m);
                            }
                        }
                        n => cur.push(n),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '#' if !in_word => break,
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// A grub.cfg menu: entries and submenus.
#[derive(Debug, Clone, Default)]
pub struct GrubMenu {
    /// Items at this level.
    pub items: Vec<GrubItem>,
}

/// One grub menu item.
#[derive(Debug, Clone)]
pub enum GrubItem {
    /// A `menuentry`.
    Entry(BootEntry),
    /// A `submenu` with its own items.
    Submenu {
        /// Its title.
        title: String,
        /// Its id.
        id: Option<String>,
        /// Its items.
        menu: GrubMenu,
    },
}

/// What a grub.cfg says.
#[derive(Debug, Clone, Default)]
pub struct GrubConfig {
    /// The menu tree.
    pub menu: GrubMenu,
    /// `set default=` values outside entries, in order.
    pub defaults: Vec<String>,
    /// True when the file runs `blscfg` (entries come from /boot/loader/entries).
    pub uses_bls: bool,
}

fn title_and_id(words: &[String]) -> (String, Option<String>) {
    let title = words.get(1).cloned().unwrap_or_default();
    let mut id = None;
    for (i, w) in words.iter().enumerate() {
        if w == "--id" || w == "$menuentry_id_option" || w == "${menuentry_id_option}" {
            id = words.get(i + 1).cloned();
        } else if let Some(v) = w.strip_prefix("--id=") {
            id = Some(v.to_string());
        }
    }
    (title, id)
}

/// Parses grub.cfg text into its menu tree and default settings.
pub fn parse_grub_cfg(text: &str) -> GrubConfig {
    enum Block {
        Entry(BootEntry),
        Submenu(String, Option<String>, GrubMenu),
        Other,
    }
    let mut cfg = GrubConfig::default();
    let mut stack: Vec<Block> = Vec::new();
    let mut count = 0usize;
    for line in text.lines() {
        let mut words = grub_words(line);
        if words.is_empty() {
            continue;
        }
        let opens = words.last().is_some_and(|w| w == "{") || line.trim_end().ends_with('{');
        if words.last().is_some_and(|w| w == "{") {
            words.pop();
        } else if let Some(last) = words.last_mut() {
            if opens {
                last.pop();
            }
        }
        let first = words.first().map(String::as_str).unwrap_or("");
        if first == "}" {
            let item = match stack.pop() {
                Some(Block::Entry(e)) if count < MAX_BOOT_ENTRIES => {
                    count += 1;
                    GrubItem::Entry(e)
                }
                Some(Block::Submenu(title, id, menu)) => GrubItem::Submenu { title, id, menu },
                _ => continue,
            };
            let parent = stack.iter_mut().rev().find_map(|b| match b {
                Block::Submenu(_, _, m) => Some(m),
                _ => None,
            });
            parent.unwrap_or(&mut cfg.menu).items.push(item);
            continue;
        }
        if opens {
            let block = match first {
                "menuentry" => {
                    let (title, id) = title_and_id(&words);
                    Block::Entry(BootEntry {
                        title,
                        id,
                        ..BootEntry::default()
                    })
                }
                "submenu" if stack.len() < MAX_MENU_DEPTH => {
                    let (title, id) = title_and_id(&words);
                    Block::Submenu(title, id, GrubMenu::default())
                }
                _ => Block::Other,
            };
            stack.push(block);
            continue;
        }
        let in_entry = stack.iter_mut().rev().find_map(|b| match b {
            Block::Entry(e) => Some(e),
            _ => None,
        });
        match (in_entry, first) {
            (Some(e), "linux" | "linuxefi" | "linux16" | "kernel") => {
                e.kernel = words.get(1).cloned();
                e.cmdline = Some(words.get(2..).unwrap_or(&[]).join(" "));
            }
            (Some(e), "initrd" | "initrdefi" | "initrd16") => {
                e.initrd = (words.len() > 1).then(|| words[1..].join(" "));
            }
            (None, "set") => {
                if let Some(v) = words.get(1).and_then(|w| w.strip_prefix("default=")) {
                    cfg.defaults.push(v.to_string());
                }
            }
            (None, "blscfg") => cfg.uses_bls = true,
            _ => {}
        }
    }
    cfg
}

/// Parses a grubenv block ("key=value" lines; `#` padding ignored).
pub fn parse_grubenv(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Parses a Boot Loader Specification entry (`key value` lines) with its file stem as id.
pub fn parse_bls(text: &str, id: &str) -> BootEntry {
    let mut e = BootEntry {
        id: Some(id.to_string()),
        ..BootEntry::default()
    };
    let mut version = None;
    for line in text.lines() {
        let line = line.trim();
        let (k, v) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let v = v.trim().to_string();
        match k {
            "title" => e.title = v,
            "version" => version = Some(v),
            "linux" => e.kernel = Some(v),
            "initrd" if e.initrd.is_none() => e.initrd = Some(v),
            "options" => {
                e.cmdline = Some(match e.cmdline.take() {
                    Some(c) => format!("{c} {v}"),
                    None => v,
                })
            }
            _ => {}
        }
    }
    if e.title.is_empty() {
        e.title = version.unwrap_or_else(|| id.to_string());
    }
    e
}

/// Compares version-like strings piecewise, digits numerically ("5.14.0-10" < "5.14.0-9" is false).
pub fn version_cmp(a: &str, b: &str) -> Ordering {
    fn pieces(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let b = s.as_bytes();
        for i in 1..=b.len() {
            if i == b.len() || b[i].is_ascii_digit() != b[start].is_ascii_digit() {
                out.push((b[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (pa, pb) = (pieces(a), pieces(b));
    for (x, y) in pa.iter().zip(&pb) {
        let o = match (x.0, y.0) {
            (true, true) => {
                let (xs, ys) = (x.1.trim_start_matches('0'), y.1.trim_start_matches('0'));
                xs.len().cmp(&ys.len()).then(xs.cmp(ys))
            }
            _ => x.1.cmp(y.1),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    pa.len().cmp(&pb.len())
}

fn flatten(menu: &GrubMenu, submenu: Option<&str>, out: &mut Vec<BootEntry>) {
    for item in &menu.items {
        match item {
            GrubItem::Entry(e) => {
                let mut e = e.clone();
                e.submenu = submenu.map(str::to_string);
                out.push(e);
            }
            GrubItem::Submenu { title, menu, .. } => flatten(menu, Some(title), out),
        }
    }
}

/// Finds the entry a grub `default` value names: an index, a title, an id,
/// or a `>`-separated path through submenus.
pub fn resolve_grub_default<'a>(menu: &'a GrubMenu, default: &str) -> Option<&'a BootEntry> {
    let mut cur = menu;
    let parts: Vec<&str> = default.split('>').collect();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let item = match part.parse::<usize>() {
            Ok(n) => cur.items.get(n)?,
            Err(_) => cur.items.iter().find(|it| match it {
                GrubItem::Entry(e) => e.title == *part || e.id.as_deref() == Some(part),
                GrubItem::Submenu { title, id, .. } => title == part || id.as_deref() == Some(part),
            })?,
        };
        match item {
            GrubItem::Entry(e) if last => return Some(e),
            GrubItem::Submenu { menu, .. } if !last => cur = menu,
            _ => return None,
        }
    }
    None
}

/// Matches a systemd-boot `default` glob (only `*` and `?`).
fn glob(pattern: &str, s: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), s.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Parses an extlinux.conf / syslinux.cfg: labels, their kernels and the default.
pub fn parse_extlinux(text: &str) -> (Vec<BootEntry>, Option<String>) {
    let mut entries: Vec<BootEntry> = Vec::new();
    let mut default = None;
    let mut menu_default = None;
    for line in text.lines() {
        let t = line.trim();
        let (k, v) = t.split_once(char::is_whitespace).unwrap_or((t, ""));
        let (k, v) = (k.to_ascii_lowercase(), v.trim().to_string());
        match k.as_str() {
            "default" => default = Some(v),
            "label" if entries.len() < MAX_BOOT_ENTRIES => entries.push(BootEntry {
                title: v.clone(),
                id: Some(v),
                ..BootEntry::default()
            }),
            _ => {
                let Some(e) = entries.last_mut() else {
                    continue;
                };
                match k.as_str() {
                    "kernel" | "linux" => e.kernel = Some(v),
                    "initrd" => e.initrd = Some(v),
                    "append" => e.cmdline = Some(v),
                    "menu" => {
                        let low = v.to_ascii_lowercase();
                        if let Some(l) = v.get(5..).filter(|_| low.starts_with("label")) {
                            e.title = l.trim().to_string();
                        } else if low == "default" {
                            menu_default = e.id.clone();
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    // An initrd= in APPEND also names the initrd.
    for e in &mut entries {
        if e.initrd.is_none() {
            e.initrd = e
                .cmdline
                .as_deref()
                .and_then(|c| c.split_whitespace().find_map(|w| w.strip_prefix("initrd=")))
                .map(str::to_string);
        }
    }
    let label_default = default.filter(|d| entries.iter().any(|e| e.id.as_deref() == Some(d)));
    (entries, menu_default.or(label_default))
}

/// Parses GRUB legacy menu.lst / grub.conf: `default`, `title`, `kernel`, `initrd`.
pub fn parse_grub_legacy(text: &str) -> (Vec<BootEntry>, Option<String>) {
    let mut entries: Vec<BootEntry> = Vec::new();
    let mut default = None;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') {
            continue;
        }
        let (k, v) = t
            .split_once(|c: char| c.is_whitespace() || c == '=')
            .unwrap_or((t, ""));
        let v = v.trim();
        match k {
            "default" if entries.is_empty() => default = Some(v.to_string()),
            "title" if entries.len() < MAX_BOOT_ENTRIES => entries.push(BootEntry {
                title: v.to_string(),
                ..BootEntry::default()
            }),
            "kernel" => {
                if let Some(e) = entries.last_mut() {
                    let mut w = v.split_whitespace();
                    e.kernel = w.next().map(str::to_string);
                    e.cmdline = Some(w.collect::<Vec<_>>().join(" "));
                }
            }
            "initrd" => {
                if let Some(e) = entries.last_mut() {
                    e.initrd = Some(v.to_string());
                }
            }
            _ => {}
        }
    }
    (entries, default)
}

/// Turns a kernel path as a bootloader writes it into a guest path: strips a
/// `(hd0,1)` device prefix and adds /boot when /boot is a separate filesystem.
fn guest_kernel_path(ctx: &mut Ctx, p: &str, base: &str) -> String {
    let p = match p.strip_prefix('(').and_then(|r| r.split_once(')')) {
        Some((_, rest)) => rest,
        None => p,
    };
    let abs = if p.starts_with('/') {
        p.to_string()
    } else {
        format!("{base}/{p}")
    };
    if ctx.exists(&abs) || abs.starts_with("/boot/") {
        return abs;
    }
    let boot = format!("/boot{abs}");
    if ctx.exists(&boot) {
        boot
    } else {
        abs
    }
}

fn finish(ctx: &mut Ctx, mut bl: Bootloader, default: Option<BootEntry>, base: &str) -> Bootloader {
    if let Some(d) = default.or_else(|| bl.entries.first().cloned()) {
        bl.default_title = Some(d.title.clone());
        bl.default_kernel = d.kernel.as_deref().map(|k| guest_kernel_path(ctx, k, base));
        bl.default_cmdline = d.cmdline.clone();
    }
    bl
}

fn bls_entries(ctx: &mut Ctx, dir: &str, kernelopts: Option<&str>) -> Vec<BootEntry> {
    let mut names: Vec<String> = ctx
        .file_names(dir, MAX_BOOT_ENTRIES)
        .into_iter()
        .filter(|n| n.ends_with(".conf"))
        .collect();
    // grub's blscfg and systemd-boot put the newest version first.
    names.sort_by(|a, b| version_cmp(b, a));
    let mut out = Vec::new();
    for n in names {
        let path = format!("{dir}/{n}");
        if let Some(t) = ctx.text(&path) {
            let mut e = parse_bls(&t, n.trim_end_matches(".conf"));
            if let (Some(c), Some(k)) = (e.cmdline.as_mut(), kernelopts) {
                *c = c.replace("$kernelopts", k).replace("${kernelopts}", k);
            }
            out.push(e);
        }
    }
    out
}

fn grub_flavour(ctx: &mut Ctx, installed: &[Package], config: &str) -> Option<String> {
    let has = |p: &str| installed.iter().any(|i| i.name.starts_with(p));
    let efi = || Some("efi".to_string());
    let bios = || Some("bios".to_string());
    if has("grub-efi") || has("grub2-efi") || has("shim") {
        return efi();
    }
    if has("grub-pc") || has("grub2-pc") {
        return bios();
    }
    for d in ["/boot/grub", "/boot/grub2"] {
        for efi_dir in ["x86_64-efi", "arm64-efi", "i386-efi", "riscv64-efi"] {
            if ctx.exists(&format!("{d}/{efi_dir}")) {
                return efi();
            }
        }
        if ctx.exists(&format!("{d}/i386-pc")) {
            return bios();
        }
    }
    if config.starts_with("/boot/efi/") {
        return efi();
    }
    // RHEL-style: grub.cfg in /boot/grub2, the signed grub and shim on the ESP.
    for vendor in ctx.list("/boot/efi/EFI") {
        let dir = format!("/boot/efi/EFI/{}", vendor.name);
        if ctx.list(&dir).iter().any(|f| {
            let n = f.name.to_ascii_lowercase();
            (n.starts_with("grub") || n.starts_with("shim")) && n.ends_with(".efi")
        }) {
            return efi();
        }
    }
    None
}

fn detect_grub2(ctx: &mut Ctx, installed: &[Package]) -> Option<Bootloader> {
    let mut candidates = vec![
        "/boot/grub/grub.cfg".to_string(),
        "/boot/grub2/grub.cfg".to_string(),
    ];
    for e in ctx.list("/boot/efi/EFI") {
        candidates.push(format!("/boot/efi/EFI/{}/grub.cfg", e.name));
    }
    let mut first: Option<(String, GrubConfig)> = None;
    let mut chosen: Option<(String, GrubConfig)> = None;
    for path in candidates {
        let Some(text) = ctx.text(&path) else {
            continue;
        };
        let cfg = parse_grub_cfg(&text);
        if !cfg.menu.items.is_empty() || cfg.uses_bls {
            chosen = Some((path, cfg));
            break;
        }
        first.get_or_insert((path, cfg));
    }
    let (path, cfg) = chosen.or(first)?;
    let dir = path.rsplit_once('/').map_or("/boot/grub", |(d, _)| d).to_string();
    let mut env = BTreeMap::new();
    for p in [
        format!("{dir}/grubenv"),
        "/boot/grub/grubenv".into(),
        "/boot/grub2/grubenv".into(),
    ] {
        if let Some(t) = ctx.text(&p) {
            env = parse_grubenv(&t);
            break;
        }
    }
    let etc_default = ctx
        .text("/etc/default/grub")
        .map(|t| super::os::parse_os_release(&t))
        .and_then(|kv| kv.get("GRUB_DEFAULT").cloned());
    let mut menu = cfg.menu.clone();
    if cfg.uses_bls {
        let bls = bls_entries(
            ctx,
            "/boot/loader/entries",
            env.get("kernelopts").map(String::as_str),
        );
        // blscfg's entries come where the command is; put them first as RHEL does.
        let mut items: Vec<GrubItem> = bls.into_iter().map(GrubItem::Entry).collect();
        items.append(&mut menu.items);
        menu.items = items;
    }
    let wants_saved =
        cfg.defaults.iter().any(|d| d.contains("saved_entry")) || etc_default.as_deref() == Some("saved");
    let literal = cfg.defaults.iter().rev().find(|d| !d.contains('$')).cloned();
    let default_name = if wants_saved {
        env.get("saved_entry").cloned().or(literal)
    } else {
        literal.or(etc_default.filter(|d| d != "saved"))
    }
    .unwrap_or_else(|| "0".into());
    let default = resolve_grub_default(&menu, &default_name).cloned();
    let mut entries = Vec::new();
    flatten(&menu, None, &mut entries);
    let flavour = grub_flavour(ctx, installed, &path);
    let bl = Bootloader {
        kind: "grub2".into(),
        flavour,
        config_path: path,
        entries,
        ..Bootloader::default()
    };
    Some(finish(ctx, bl, default, "/boot"))
}

fn detect_systemd_boot(ctx: &mut Ctx) -> Option<Bootloader> {
    for esp in ["/boot/efi", "/efi", "/boot"] {
        let conf = format!("{esp}/loader/loader.conf");
        let Some(text) = ctx.text(&conf) else {
            continue;
        };
        let default_glob = text.lines().find_map(|l| {
            let (k, v) = l.trim().split_once(char::is_whitespace)?;
            (k == "default").then(|| v.trim().trim_end_matches(".conf").to_string())
        });
        let mut entries = bls_entries(ctx, &format!("{esp}/loader/entries"), None);
        if entries.is_empty() && esp != "/boot" {
            entries = bls_entries(ctx, "/boot/loader/entries", None);
        }
        let default = default_glob.and_then(|g| {
            entries
                .iter()
                .find(|e| e.id.as_deref().is_some_and(|id| glob(&g, id)))
                .cloned()
        });
        let bl = Bootloader {
            kind: "systemd-boot".into(),
            flavour: Some("efi".into()),
            config_path: conf,
            entries,
            ..Bootloader::default()
        };
        return Some(finish(ctx, bl, default, esp));
    }
    None
}

fn detect_extlinux(ctx: &mut Ctx) -> Option<Bootloader> {
    for (path, kind) in [
        ("/boot/extlinux/extlinux.conf", "extlinux"),
        ("/boot/extlinux.conf", "extlinux"),
        ("/extlinux.conf", "extlinux"),
        ("/boot/syslinux/syslinux.cfg", "syslinux"),
        ("/syslinux/syslinux.cfg", "syslinux"),
        ("/boot/syslinux.cfg", "syslinux"),
    ] {
        let Some(text) = ctx.text(path) else {
            continue;
        };
        let (entries, default) = parse_extlinux(&text);
        let default = default.and_then(|d| entries.iter().find(|e| e.id.as_deref() == Some(&d)).cloned());
        let base = path.rsplit_once('/').map_or("/", |(d, _)| d).to_string();
        let bl = Bootloader {
            kind: kind.into(),
            flavour: Some("bios".into()),
            config_path: path.into(),
            entries,
            ..Bootloader::default()
        };
        return Some(finish(ctx, bl, default, &base));
    }
    None
}

fn detect_grub_legacy(ctx: &mut Ctx) -> Option<Bootloader> {
    for path in ["/boot/grub/menu.lst", "/boot/grub/grub.conf", "/etc/grub.conf"] {
        let Some(text) = ctx.text(path) else {
            continue;
        };
        let (entries, default) = parse_grub_legacy(&text);
        let index = match default.as_deref() {
            Some("saved") => ctx
                .text("/boot/grub/default")
                .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<usize>().ok())),
            Some(d) => d.parse().ok(),
            None => Some(0),
        };
        let default = index.and_then(|i| entries.get(i).cloned());
        let bl = Bootloader {
            kind: "grub-legacy".into(),
            flavour: Some("bios".into()),
            config_path: path.into(),
            entries,
            ..Bootloader::default()
        };
        return Some(finish(ctx, bl, default, "/boot"));
    }
    None
}

/// Finds the bootloader: GRUB 2, then systemd-boot, extlinux/syslinux, GRUB legacy.
pub(crate) fn detect(ctx: &mut Ctx, installed: &[Package]) -> Option<Bootloader> {
    detect_grub2(ctx, installed)
        .or_else(|| detect_systemd_boot(ctx))
        .or_else(|| detect_extlinux(ctx))
        .or_else(|| detect_grub_legacy(ctx))
}

#[cfg(test)]
mod tests;
