//! Windows guests: the hive reader against hivex (hivexregedit --export and
//! hivexget) on hives generated from testdata/windows/*.reg, and inspection
//! of Windows 10, Windows 11 and Server 2019 system volumes laid out in a
//! MemFs from the same generated files.

mod common;

use common::{fixtures, tool_ok};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use v2x::fs::guest::GuestRoot;
use v2x::fs::memfs::MemFs;
use v2x::guest::hive::Hive;
use v2x::guest::windows::{inspect, DriveLetter, ServiceInfo, WindowsInfo};

fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| fixtures("gen-windows.sh"))
}

/// (key path, value name) → (type, data); keys with no values map to None.
type Flat = BTreeMap<(String, Option<String>), Option<(u32, Vec<u8>)>>;

fn unquote(s: &str) -> (String, &str) {
    // s starts after the opening quote; handles \\ and \" escapes.
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => out.push(chars.next().unwrap().1),
            '"' => return (out, &s[i + 1..]),
            c => out.push(c),
        }
    }
    panic!("unterminated name in {s}")
}

fn parse_export(text: &str) -> Flat {
    let joined = text.replace("\\\r\n", "").replace("\\\n", "");
    let mut flat = Flat::new();
    let mut key = String::new();
    for line in joined.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(k) = line.strip_prefix('[') {
            key = k.trim_end_matches(']').to_string();
            flat.insert((key.clone(), None), None);
            continue;
        }
        let (name, rest) = if let Some(r) = line.strip_prefix("@=") {
            (String::new(), r)
        } else if let Some(r) = line.strip_prefix('"') {
            let (n, r) = unquote(r);
            (n, r.strip_prefix('=').unwrap())
        } else {
            continue; // the header line
        };
        let hex = |s: &str| -> Vec<u8> {
            s.split(',')
                .filter(|b| !b.trim().is_empty())
                .map(|b| u8::from_str_radix(b.trim(), 16).unwrap())
                .collect()
        };
        let (ty, data) = if let Some(d) = rest.strip_prefix("dword:") {
            (4, u32::from_str_radix(d, 16).unwrap().to_le_bytes().to_vec())
        } else if let Some(d) = rest.strip_prefix("hex:") {
            (3, hex(d))
        } else if let Some(r) = rest.strip_prefix("hex(") {
            let (t, d) = r.split_once("):").unwrap();
            (u32::from_str_radix(t, 16).unwrap(), hex(d))
        } else {
            panic!("unexpected export line {line}")
        };
        flat.insert((key.clone(), Some(name)), Some((ty, data)));
    }
    flat
}

fn flatten(hive: &Hive) -> Flat {
    let mut flat = Flat::new();
    hive.walk(|path, key| {
        let k = format!("\\{path}");
        flat.insert((k.clone(), None), None);
        for v in key.values()? {
            flat.insert(
                (k.clone(), Some(v.name().to_string())),
                Some((v.raw_type(), v.data().to_vec())),
            );
        }
        Ok(())
    })
    .unwrap();
    flat
}

#[test]
fn hives_read_back_equal_to_hivexregedit_export() {
    for v in ["win10", "win11", "srv2019", "win7"] {
        for h in ["SOFTWARE", "SYSTEM"] {
            let path = dir().join(v).join(h);
            let hive = Hive::parse(std::fs::read(&path).unwrap()).unwrap();
            assert!(hive.notes().is_empty(), "{v}/{h}: {:?}", hive.notes());
            let ours = flatten(&hive);
            let oracle = parse_export(&std::fs::read_to_string(path.with_extension("export.reg")).unwrap());
            assert!(oracle.len() > 5, "{v}/{h}: export parsed to almost nothing");
            assert_eq!(ours, oracle, "{v}/{h}");
        }
    }
}

#[test]
fn strings_and_numbers_match_hivexget() {
    let software = dir().join("win10/SOFTWARE");
    let hive = Hive::parse(std::fs::read(&software).unwrap()).unwrap();
    let cv = hive
        .open("microsoft\\WINDOWS NT\\currentversion")
        .unwrap()
        .unwrap();
    for name in ["ProductName", "RegisteredOwner", "BuildLabEx", "SystemRoot", ""] {
        let out = tool_ok(
            "hivexget",
            &[
                software.to_str().unwrap(),
                "Microsoft\\Windows NT\\CurrentVersion",
                if name.is_empty() { "@" } else { name },
            ],
        );
        let want = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            cv.value(name).unwrap().unwrap().as_string().unwrap(),
            want.trim_end_matches('\n'),
            "{name}"
        );
    }
    let out = tool_ok(
        "hivexget",
        &[
            software.to_str().unwrap(),
            "Microsoft\\Windows NT\\CurrentVersion",
            "Multi",
        ],
    );
    // hivexget also prints the empty string after the final terminator; the
    // list ends at the first empty string, as Windows reads it.
    let text = String::from_utf8(out.stdout).unwrap();
    let want: Vec<&str> = text.lines().take_while(|l| !l.is_empty()).collect();
    assert_eq!(want, ["a", "bc"]);
    assert_eq!(
        cv.value("multi").unwrap().unwrap().as_multi_string().unwrap(),
        want
    );
    let out = tool_ok(
        "hivexget",
        &[
            software.to_str().unwrap(),
            "Microsoft\\Windows NT\\CurrentVersion",
            "CurrentMajorVersionNumber",
        ],
    );
    assert_eq!(
        cv.value("CurrentMajorVersionNumber")
            .unwrap()
            .unwrap()
            .as_u32()
            .unwrap()
            .to_string(),
        String::from_utf8(out.stdout).unwrap().trim()
    );
    let out = tool_ok(
        "hivexget",
        &[
            software.to_str().unwrap(),
            "Microsoft\\Windows NT\\CurrentVersion",
            "InstallTime",
        ],
    );
    assert_eq!(
        cv.value("InstallTime")
            .unwrap()
            .unwrap()
            .as_u64()
            .unwrap()
            .to_string(),
        String::from_utf8(out.stdout).unwrap().trim()
    );
}

/// A system volume laid out with the given spelling of the system root.
fn volume(variant: &str, windows: &str) -> GuestRoot {
    let d = dir().join(variant);
    let read = |n: &str| std::fs::read(d.join(n)).unwrap();
    let mut fs = MemFs::new();
    fs.file(&format!("{windows}/System32/config/SOFTWARE"), &read("SOFTWARE"));
    fs.file(&format!("{windows}/System32/config/SYSTEM"), &read("SYSTEM"));
    fs.file(&format!("{windows}/System32/ntoskrnl.exe"), &read("ntoskrnl.exe"));
    fs.file("/hiberfil.sys", &read("hiberfil.sys"));
    fs.dir("/Program Files");
    GuestRoot::new(Arc::new(fs), "sda2")
}

fn svc(service: &str, group: &str, start: u32) -> ServiceInfo {
    ServiceInfo {
        service: service.into(),
        group: group.into(),
        start: Some(start),
    }
}

#[test]
fn windows_10_pro() {
    let info = inspect(&volume("win10", "/Windows")).unwrap();
    let mut tools = info.hypervisor_tools.clone();
    tools.sort_by(|a, b| a.service.cmp(&b.service));
    assert_eq!(
        info,
        WindowsInfo {
            system_root: "/Windows".into(),
            product_name: Some("Windows 10 Pro".into()),
            product_variant: Some("Windows 10 Pro".into()),
            edition_id: Some("Professional".into()),
            installation_type: Some("Client".into()),
            major_version: Some(10),
            minor_version: Some(0),
            build: Some(19045),
            display_version: Some("22H2".into()),
            arch: Some("x86_64".into()),
            hostname: Some("DESKTOP-V2XTEST".into()),
            control_set: Some("ControlSet001".into()),
            fast_startup: true,
            hibernated: true,
            hypervisor_tools: info.hypervisor_tools.clone(),
            virtio_drivers: vec![],
            drive_letters: vec![DriveLetter {
                letter: "C:".into(),
                mbr_signature: Some(0x7856_3412),
                partition_offset: Some(1 << 20),
                gpt_partition_guid: None,
            }],
            notes: vec![],
        }
    );
    assert_eq!(
        tools,
        [
            svc("VMTools", "vmware", 2),
            svc("vm3dmp", "vmware", 3),
            svc("vmci", "vmware", 0)
        ]
    );
}

#[test]
fn windows_11_is_told_apart_from_10() {
    let info = inspect(&volume("win11", "/windows")).unwrap();
    assert_eq!(info.system_root, "/windows");
    assert_eq!(info.product_name.as_deref(), Some("Windows 10 Enterprise"));
    assert_eq!(info.product_variant.as_deref(), Some("Windows 11 Enterprise"));
    assert_eq!(info.build, Some(22631));
    assert_eq!(info.display_version.as_deref(), Some("23H2"));
    assert_eq!(info.arch.as_deref(), Some("aarch64"));
    assert!(!info.hibernated);
    assert!(info.fast_startup);
}

#[test]
fn server_2019_uses_the_current_control_set() {
    let info = inspect(&volume("srv2019", "/WINDOWS")).unwrap();
    assert_eq!(
        info.product_variant.as_deref(),
        Some("Windows Server 2019 Standard")
    );
    assert_eq!(info.installation_type.as_deref(), Some("Server"));
    assert_eq!(info.edition_id.as_deref(), Some("ServerStandard"));
    assert_eq!(info.build, Some(17763));
    assert_eq!(info.display_version.as_deref(), Some("1809"));
    assert_eq!(info.arch.as_deref(), Some("i386"));
    assert_eq!(info.control_set.as_deref(), Some("ControlSet002"));
    assert_eq!(info.hostname.as_deref(), Some("SRV2019-DC01"));
    assert!(!info.fast_startup && !info.hibernated);
    let mut tools = info.hypervisor_tools.clone();
    tools.sort_by(|a, b| a.service.cmp(&b.service));
    assert_eq!(
        tools,
        [svc("storvsc", "hyperv", 0), svc("vmicheartbeat", "hyperv", 3)]
    );
    let mut virtio = info.virtio_drivers.clone();
    virtio.sort_by(|a, b| a.service.cmp(&b.service));
    assert_eq!(virtio, [svc("VIOSTOR", "block", 0), svc("netkvm", "net", 3)]);
    // The GPT entry is decoded; the device-path entry for E: and the volume GUID entry are skipped.
    assert_eq!(
        info.drive_letters,
        [DriveLetter {
            letter: "C:".into(),
            mbr_signature: None,
            partition_offset: None,
            gpt_partition_guid: Some("01234567-89ab-cdef-0123-456789abcdef".into()),
        }]
    );
    assert!(info.notes.is_empty(), "{:?}", info.notes);
}

#[test]
fn windows_7_version_comes_from_the_version_string() {
    let info = inspect(&volume("win7", "/Windows")).unwrap();
    assert_eq!(info.product_variant.as_deref(), Some("Windows 7 Professional"));
    assert_eq!((info.major_version, info.minor_version), (Some(6), Some(1)));
    assert_eq!(info.build, Some(7601));
    assert_eq!(info.display_version, None);
}

#[test]
fn missing_pieces_are_notes_or_errors() {
    let mut fs = MemFs::new();
    fs.dir("/Windows/System32");
    let info = inspect(&GuestRoot::new(Arc::new(fs), "sda1")).unwrap();
    assert_eq!(info.notes.len(), 3, "{:?}", info.notes);
    assert_eq!(info.arch, None);
    let err = inspect(&GuestRoot::new(Arc::new(MemFs::new()), "sda1")).unwrap_err();
    assert!(matches!(err, v2x_formats::Error::NotFound(_)), "{err}");
    // A kernel that is not a PE image is corruption, not a guess.
    let mut fs = MemFs::new();
    fs.file(
        "/Windows/System32/ntoskrnl.exe",
        b"not a PE file at all, just text that is long enough to read 64 bytes",
    );
    let err = inspect(&GuestRoot::new(Arc::new(fs), "sda1")).unwrap_err();
    assert!(matches!(err, v2x_formats::Error::Corrupt { .. }), "{err}");
}

#[test]
fn pe_header_offset_is_capped() {
    let mut pe = std::fs::read(dir().join("win10/ntoskrnl.exe")).unwrap();
    pe[0x3c..0x40].copy_from_slice(&0x1000_0000u32.to_le_bytes());
    let mut fs = MemFs::new();
    fs.file("/Windows/System32/ntoskrnl.exe", &pe);
    let err = inspect(&GuestRoot::new(Arc::new(fs), "sda1")).unwrap_err();
    assert!(
        matches!(
            err,
            v2x_formats::Error::LimitExceeded {
                what: "PE header offset",
                ..
            }
        ),
        "{err}"
    );
}
