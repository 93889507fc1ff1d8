//! Inspection of a Windows system volume: version and edition from the
//! SOFTWARE hive, hostname, services and Fast Startup from the SYSTEM hive,
//! architecture from the kernel's PE header, hibernation from `hiberfil.sys`.
//!
//! Which services are hypervisor tools and which virtio drivers to look for
//! is data, in `drivers-db/windows-*.toml`.

use super::hive::{Hive, Key, MAX_HIVE_SIZE};
use crate::fs::guest::GuestRoot;
use serde::{Deserialize, Serialize};
use v2x_formats::{Error, Result};

/// Largest `e_lfanew` (offset of the PE header) we accept in a kernel image.
pub const MAX_PE_HEADER_OFFSET: u32 = 64 << 10;

/// Most services scanned in one control set.
pub const MAX_SERVICES: usize = 1 << 16;

/// First build number of Windows 11 (which still says "Windows 10" in ProductName).
pub const WINDOWS_11_FIRST_BUILD: u32 = 22000;

/// What inspection found on a Windows system volume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WindowsInfo {
    /// Guest path of the system root, as stored ("/Windows").
    pub system_root: String,
    /// SOFTWARE `ProductName` exactly as stored (Windows 11 says "Windows 10 ...").
    pub product_name: Option<String>,
    /// The product name corrected for what the build really is: "Windows 10"
    /// becomes "Windows 11" on client builds >= 22000; otherwise equal to `product_name`.
    pub product_variant: Option<String>,
    /// `EditionID` ("Professional", "ServerStandard", ...).
    pub edition_id: Option<String>,
    /// `InstallationType` ("Client", "Server", "Server Core").
    pub installation_type: Option<String>,
    /// Major version (10 for Windows 10/11 and Server 2016+; 6 for 7/8/2008/2012).
    pub major_version: Option<u32>,
    /// Minor version (0 for 10/11; 1 for Windows 7, 3 for 8.1).
    pub minor_version: Option<u32>,
    /// Build number (`CurrentBuildNumber`, else `CurrentBuild`).
    pub build: Option<u32>,
    /// Feature release name (`DisplayVersion` such as "23H2", else `ReleaseId` such as "1809").
    pub display_version: Option<String>,
    /// Kernel architecture from ntoskrnl.exe: "x86_64", "i386" or "aarch64".
    pub arch: Option<String>,
    /// Computer name from the SYSTEM hive.
    pub hostname: Option<String>,
    /// The control set `Select\Current` names ("ControlSet001").
    pub control_set: Option<String>,
    /// Fast Startup (hybrid shutdown) is enabled: shutting down hibernates the kernel.
    pub fast_startup: bool,
    /// `hiberfil.sys` holds a hibernation image: the volume is not cleanly shut down.
    pub hibernated: bool,
    /// Hypervisor guest-tool services installed.
    pub hypervisor_tools: Vec<ServiceInfo>,
    /// virtio drivers installed.
    pub virtio_drivers: Vec<ServiceInfo>,
    /// Drive letters from SYSTEM `MountedDevices`, sorted by letter.
    pub drive_letters: Vec<DriveLetter>,
    /// Things worth reporting (dirty hives, unreadable parts).
    pub notes: Vec<String>,
}

/// A `\DosDevices\X:` entry of `MountedDevices`: which partition has the letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DriveLetter {
    /// "C:".
    pub letter: String,
    /// MBR disk signature, for a 12-byte MBR entry.
    pub mbr_signature: Option<u32>,
    /// Partition start in bytes, for a 12-byte MBR entry.
    pub partition_offset: Option<u64>,
    /// GPT partition GUID (lowercase, dashed), for a `DMIO:ID:` entry.
    pub gpt_partition_guid: Option<String>,
}

/// One service key found under `Services`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceInfo {
    /// Service key name as stored.
    pub service: String,
    /// Whose it is: the hypervisor (tools) or the driver role (virtio), from drivers-db.
    pub group: String,
    /// `Start` value (0 boot ... 4 disabled), if set.
    pub start: Option<u32>,
}

#[derive(Deserialize)]
struct ToolsDb {
    hypervisor: Vec<ToolsEntry>,
}

#[derive(Deserialize)]
struct ToolsEntry {
    name: String,
    services: Vec<String>,
}

#[derive(Deserialize)]
struct VirtioDb {
    driver: Vec<VirtioEntry>,
}

#[derive(Deserialize)]
struct VirtioEntry {
    service: String,
    role: String,
}

const TOOLS_DB: &str = include_str!("../../drivers-db/windows/hypervisor-tools.toml");
const VIRTIO_DB: &str = include_str!("../../drivers-db/windows/virtio-drivers.toml");

/// Service names paired with their group (hypervisor or driver role).
type ServiceTable = Vec<(String, String)>;

/// The hypervisor-tools and virtio tables of drivers-db.
fn service_tables() -> Result<(ServiceTable, ServiceTable)> {
    let bad = |e: toml::de::Error| Error::invalid(format!("drivers-db windows table: {e}"));
    let tools: ToolsDb = toml::from_str(TOOLS_DB).map_err(bad)?;
    let virtio: VirtioDb = toml::from_str(VIRTIO_DB).map_err(bad)?;
    let tools = tools
        .hypervisor
        .into_iter()
        .flat_map(|h| {
            let name = h.name;
            h.services.into_iter().map(move |s| (s, name.clone()))
        })
        .collect();
    let virtio = virtio.driver.into_iter().map(|d| (d.service, d.role)).collect();
    Ok((tools, virtio))
}

/// Inspects the Windows installation whose system volume is `root`'s root.
pub fn inspect(root: &GuestRoot) -> Result<WindowsInfo> {
    let system_root = root
        .resolve_case_insensitive("/Windows")?
        .ok_or_else(|| Error::not_found("no \\Windows directory on this volume"))?;
    let mut info = WindowsInfo {
        system_root: system_root.clone(),
        ..Default::default()
    };
    if let Some(hive) = load_hive(root, &system_root, "SOFTWARE", &mut info.notes)? {
        read_software(&hive, &mut info)?;
    }
    if let Some(hive) = load_hive(root, &system_root, "SYSTEM", &mut info.notes)? {
        read_system(&hive, &mut info)?;
    }
    let kernel = format!("{system_root}/System32/ntoskrnl.exe");
    match root.resolve_case_insensitive(&kernel)? {
        Some(p) => info.arch = Some(pe_machine(root, &p)?.to_string()),
        None => info
            .notes
            .push("no System32\\ntoskrnl.exe: architecture unknown".into()),
    }
    if let Some(p) = root.resolve_case_insensitive("/hiberfil.sys")? {
        let head = root.read_range(&p, 0, 4)?;
        info.hibernated = matches!(head.as_slice(), b"hibr" | b"HIBR" | b"wake" | b"WAKE");
    }
    Ok(info)
}

fn load_hive(
    root: &GuestRoot,
    system_root: &str,
    name: &str,
    notes: &mut Vec<String>,
) -> Result<Option<Hive>> {
    let Some(path) = root.resolve_case_insensitive(&format!("{system_root}/System32/config/{name}"))? else {
        notes.push(format!("no {name} hive"));
        return Ok(None);
    };
    let hive = Hive::parse(root.read_file_max(&path, MAX_HIVE_SIZE)?)?;
    notes.extend(hive.notes().iter().map(|n| format!("{name}: {n}")));
    Ok(Some(hive))
}

fn string(key: &Key<'_>, name: &str) -> Result<Option<String>> {
    Ok(key
        .value(name)?
        .and_then(|v| v.as_string())
        .filter(|s| !s.is_empty()))
}

fn dword(key: &Key<'_>, name: &str) -> Result<Option<u32>> {
    Ok(key.value(name)?.and_then(|v| v.as_u32()))
}

fn read_software(hive: &Hive, info: &mut WindowsInfo) -> Result<()> {
    let Some(cv) = hive.open("Microsoft\\Windows NT\\CurrentVersion")? else {
        info.notes
            .push("SOFTWARE has no Microsoft\\Windows NT\\CurrentVersion".into());
        return Ok(());
    };
    info.product_name = string(&cv, "ProductName")?;
    info.edition_id = string(&cv, "EditionID")?;
    info.installation_type = string(&cv, "InstallationType")?;
    info.display_version = match string(&cv, "DisplayVersion")? {
        Some(v) => Some(v),
        None => string(&cv, "ReleaseId")?,
    };
    let build = match string(&cv, "CurrentBuildNumber")? {
        Some(b) => Some(b),
        None => string(&cv, "CurrentBuild")?,
    };
    info.build = build.and_then(|b| b.trim().parse().ok());
    info.major_version = dword(&cv, "CurrentMajorVersionNumber")?;
    info.minor_version = dword(&cv, "CurrentMinorVersionNumber")?;
    if info.major_version.is_none() {
        // Before Windows 10 the version is only the string "6.1", "6.3"...
        if let Some((maj, min)) = string(&cv, "CurrentVersion")?
            .as_deref()
            .and_then(|v| v.split_once('.'))
        {
            info.major_version = maj.parse().ok();
            info.minor_version = min.parse().ok();
        }
    }
    info.product_variant = info.product_name.as_ref().map(|name| {
        let client = !info
            .installation_type
            .as_deref()
            .unwrap_or("Client")
            .starts_with("Server");
        match name.strip_prefix("Windows 10") {
            Some(rest) if client && info.build.is_some_and(|b| b >= WINDOWS_11_FIRST_BUILD) => {
                format!("Windows 11{rest}")
            }
            _ => name.clone(),
        }
    });
    Ok(())
}

fn read_system(hive: &Hive, info: &mut WindowsInfo) -> Result<()> {
    if let Some(md) = hive.open("MountedDevices")? {
        info.drive_letters = md
            .values()?
            .iter()
            .filter_map(|v| drive_letter(v.name(), v.data()))
            .collect();
        info.drive_letters.sort_by(|a, b| a.letter.cmp(&b.letter));
    }
    let current = match hive.open("Select")? {
        Some(select) => dword(&select, "Current")?,
        None => None,
    };
    let Some(n) = current else {
        info.notes.push("SYSTEM has no Select\\Current".into());
        return Ok(());
    };
    let set_name = format!("ControlSet{n:03}");
    let Some(set) = hive.open(&set_name)? else {
        info.notes.push(format!("SYSTEM has no {set_name}"));
        return Ok(());
    };
    info.control_set = Some(set_name);
    if let Some(k) = open_below(&set, "Control\\ComputerName\\ComputerName")? {
        info.hostname = string(&k, "ComputerName")?;
    }
    if let Some(power) = open_below(&set, "Control\\Session Manager\\Power")? {
        info.fast_startup = dword(&power, "HiberbootEnabled")? == Some(1);
    }
    if let Some(services) = set.subkey("Services")? {
        let (tools, virtio) = service_tables()?;
        let all = services.subkeys()?;
        v2x_formats::error::check_limit(
            "services in one control set",
            all.len() as u64,
            MAX_SERVICES as u64,
        )?;
        for svc in &all {
            for (table, out) in [
                (&tools, &mut info.hypervisor_tools),
                (&virtio, &mut info.virtio_drivers),
            ] {
                if let Some((_, group)) = table
                    .iter()
                    .find(|(s, _)| super::hive::names_equal(s, svc.name()))
                {
                    out.push(ServiceInfo {
                        service: svc.name().to_string(),
                        group: group.clone(),
                        start: dword(svc, "Start")?,
                    });
                }
            }
        }
    }
    Ok(())
}

/// Decodes one `MountedDevices` value if it names a drive letter in a form we know.
fn drive_letter(name: &str, data: &[u8]) -> Option<DriveLetter> {
    let letter = name.strip_prefix("\\DosDevices\\")?;
    if letter.len() != 2 || !letter.ends_with(':') || !letter.as_bytes()[0].is_ascii_alphabetic() {
        return None;
    }
    let mut out = DriveLetter {
        letter: letter.to_ascii_uppercase(),
        mbr_signature: None,
        partition_offset: None,
        gpt_partition_guid: None,
    };
    if data.len() == 12 {
        out.mbr_signature = Some(u32::from_le_bytes(data[0..4].try_into().ok()?));
        out.partition_offset = Some(u64::from_le_bytes(data[4..12].try_into().ok()?));
    } else if let Some(g) = data.strip_prefix(b"DMIO:ID:").filter(|g| g.len() == 16) {
        let d1 = u32::from_le_bytes(g[0..4].try_into().ok()?);
        let d2 = u16::from_le_bytes([g[4], g[5]]);
        let d3 = u16::from_le_bytes([g[6], g[7]]);
        let tail: String = g[10..].iter().map(|b| format!("{b:02x}")).collect();
        out.gpt_partition_guid = Some(format!(
            "{d1:08x}-{d2:04x}-{d3:04x}-{:02x}{:02x}-{tail}",
            g[8], g[9]
        ));
    } else {
        return None;
    }
    Some(out)
}

/// The key at a `\`-separated path below `key`.
fn open_below<'h>(key: &Key<'h>, path: &str) -> Result<Option<Key<'h>>> {
    let mut k = key.clone();
    for comp in path.split('\\') {
        match k.subkey(comp)? {
            Some(next) => k = next,
            None => return Ok(None),
        }
    }
    Ok(Some(k))
}

/// The architecture named by the Machine field of a PE image's header.
pub fn pe_machine(root: &GuestRoot, path: &str) -> Result<&'static str> {
    let dos = root.read_range(path, 0, 64)?;
    if dos.len() < 64 || &dos[0..2] != b"MZ" {
        return Err(Error::corrupt(format!("{path} has no MZ header"), 0));
    }
    let lfanew = u32::from_le_bytes([dos[0x3c], dos[0x3d], dos[0x3e], dos[0x3f]]);
    v2x_formats::error::check_limit(
        "PE header offset",
        u64::from(lfanew),
        u64::from(MAX_PE_HEADER_OFFSET),
    )?;
    let pe = root.read_range(path, u64::from(lfanew), 6)?;
    if pe.len() < 6 || &pe[0..4] != b"PE\0\0" {
        return Err(Error::corrupt(
            format!("{path} has no PE signature"),
            u64::from(lfanew),
        ));
    }
    match u16::from_le_bytes([pe[4], pe[5]]) {
        0x8664 => Ok("x86_64"),
        0x014c => Ok("i386"),
        0xaa64 => Ok("aarch64"),
        m => Err(Error::unsupported(format!("{path}: PE machine type {m:#06x}"))),
    }
}
