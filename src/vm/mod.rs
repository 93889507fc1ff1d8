//! Whole virtual machines: what a VM description (OVA, OVF, VMX) says about a
//! machine (disks, CPUs, memory, NICs, firmware, OS), parsed into one model
//! that the conversion and the target writers share.
//!
//! Parsers live beside this file (`ovf`, `ova`, `vmx`). Each returns a
//! [`VmSpec`]; nothing here touches disk contents.

pub mod blank;
pub mod manifest;
pub mod open;
pub mod ova;
pub mod ovf;
pub mod tar;
pub mod vmx;

use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use v2x_formats::{Error, Result};

/// Largest VM description file read into memory (OVF, VMX, manifest).
pub const MAX_DESCRIPTOR_BYTES: u64 = 16 << 20;
/// Most disks accepted in one VM.
pub const MAX_DISKS: usize = 64;
/// Most NICs accepted in one VM.
pub const MAX_NICS: usize = 64;
/// Most vCPUs accepted (KVM's own limit is in this range).
pub const MAX_VCPUS: u32 = 4096;
/// Largest memory size accepted, MiB (16 TiB).
pub const MAX_MEMORY_MIB: u64 = 16 << 20;

/// Memory given to a plain disk input (MiB).
pub const DEFAULT_MEMORY_MIB: u64 = 2048;
/// vCPUs given to a plain disk input.
pub const DEFAULT_VCPUS: u32 = 1;

/// What kind of description the VM came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// An OVA: a tar holding an OVF, its manifest and the disks.
    Ova,
    /// An OVF descriptor with its disks beside it.
    Ovf,
    /// A VMware .vmx file with its disks' descriptors beside it.
    Vmx,
    /// A single disk image (defaults for everything else).
    Disk,
}

/// Firmware the VM boots with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    /// Legacy BIOS.
    Bios,
    /// UEFI.
    Uefi,
}

impl Firmware {
    /// "bios" or "uefi".
    pub fn name(self) -> &'static str {
        match self {
            Firmware::Bios => "bios",
            Firmware::Uefi => "uefi",
        }
    }
}

/// Where a disk's bytes are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum DiskLocation {
    /// An image file (or VMDK descriptor) on the host.
    File {
        /// Its path, resolved against the description's directory.
        path: PathBuf,
    },
    /// A member of an OVA tar, read in place.
    Member {
        /// The OVA.
        tar: PathBuf,
        /// The member's name in the tar.
        member: String,
        /// Offset of the member's data in the tar.
        offset: u64,
        /// Length of the member's data.
        len: u64,
        /// The member is gzip-compressed (OVF `ovf:compression="gzip"`).
        gzip: bool,
    },
    /// No file: a new, empty disk of the disk's capacity (OVF Disk without fileRef).
    Blank,
}

/// One disk of the VM, in the order the guest sees them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmDisk {
    /// Where the bytes are.
    pub location: DiskLocation,
    /// Capacity the description states, bytes (None when it does not say).
    pub capacity: Option<u64>,
    /// Image format the description states ("vmdk-streamOptimized", "vmdk", ...).
    pub format_hint: Option<String>,
    /// Where the source attached it ("scsi0:0", "sata0:1", "ide0:0", "nvme0:0", or
    /// an OVF controller such as "SCSI Controller 0 (lsilogic) unit 0").
    pub attachment: Option<String>,
}

/// One network interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmNic {
    /// The source network's name ("VM Network", "bridged", ...).
    pub network: Option<String>,
    /// MAC address, lowercase `aa:bb:cc:dd:ee:ff`, when the source gives one.
    pub mac: Option<String>,
    /// The source's NIC model ("vmxnet3", "e1000", "E1000", ...).
    pub model: Option<String>,
}

/// A virtual machine as its description states it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmSpec {
    /// The VM's name (from the description, else the file's stem).
    pub name: String,
    /// What it was read from.
    pub source_kind: SourceKind,
    /// The file it was read from.
    pub source_path: PathBuf,
    /// Number of virtual CPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Firmware; None when the description does not say (inspection decides).
    pub firmware: Option<Firmware>,
    /// The source's guest OS identifier (VMX guestOS, OVF OperatingSystemSection
    /// `vmw:osType` or `ovf:id`).
    pub os_type: Option<String>,
    /// The source's free-text OS description, when given.
    pub os_description: Option<String>,
    /// The disks, first is the boot disk.
    pub disks: Vec<VmDisk>,
    /// The NICs.
    pub nics: Vec<VmNic>,
    /// Things the user should know: ignored devices (CD-ROM, floppy), files
    /// that are not disks, assumptions made.
    pub notes: Vec<String>,
}

impl VmSpec {
    /// The spec of a plain disk image: 2 GiB, 1 vCPU, one NIC, firmware left to inspection.
    pub fn from_disk(path: &Path) -> VmSpec {
        VmSpec {
            name: file_stem_name(path),
            source_kind: SourceKind::Disk,
            source_path: path.to_path_buf(),
            vcpus: DEFAULT_VCPUS,
            memory_mib: DEFAULT_MEMORY_MIB,
            firmware: None,
            os_type: None,
            os_description: None,
            disks: vec![VmDisk {
                location: DiskLocation::File {
                    path: path.to_path_buf(),
                },
                capacity: None,
                format_hint: None,
                attachment: None,
            }],
            nics: vec![VmNic {
                network: None,
                mac: None,
                model: None,
            }],
            notes: Vec::new(),
        }
    }

    /// The human-readable form `--print-source` prints.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "name:      {}", self.name);
        let _ = writeln!(
            s,
            "source:    {:?} {}",
            self.source_kind,
            self.source_path.display()
        );
        let _ = writeln!(s, "vcpus:     {}", self.vcpus);
        let _ = writeln!(s, "memory:    {} MiB", self.memory_mib);
        let _ = writeln!(
            s,
            "firmware:  {}",
            self.firmware
                .map_or("unknown (inspection decides)", Firmware::name)
        );
        let _ = writeln!(
            s,
            "os:        {}{}",
            self.os_type.as_deref().unwrap_or("unknown"),
            self.os_description
                .as_deref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        );
        for (i, d) in self.disks.iter().enumerate() {
            let loc = match &d.location {
                DiskLocation::File { path } => path.display().to_string(),
                DiskLocation::Member {
                    tar,
                    member,
                    offset,
                    len,
                    gzip,
                } => format!(
                    "{}!{member} (offset {offset}, {len} bytes{})",
                    tar.display(),
                    if *gzip { ", gzip" } else { "" }
                ),
                DiskLocation::Blank => "(blank)".to_string(),
            };
            let _ = writeln!(s, "disk {i}:    {loc}");
            if let Some(c) = d.capacity {
                let _ = writeln!(s, "  capacity:   {c} bytes");
            }
            if let Some(f) = &d.format_hint {
                let _ = writeln!(s, "  format:     {f}");
            }
            if let Some(a) = &d.attachment {
                let _ = writeln!(s, "  attached:   {a}");
            }
        }
        for (i, n) in self.nics.iter().enumerate() {
            let _ = writeln!(
                s,
                "nic {i}:     network={} mac={} model={}",
                n.network.as_deref().unwrap_or("-"),
                n.mac.as_deref().unwrap_or("-"),
                n.model.as_deref().unwrap_or("-")
            );
        }
        for n in &self.notes {
            let _ = writeln!(s, "note:      {n}");
        }
        s
    }
}

/// Decides what kind of source `path` is from its first bytes (and, for VMX,
/// which is plain text, its extension). A file named `.ova`, `.ovf` or `.vmx`
/// whose content does not match is an error, never a disk image.
pub fn detect(path: &Path) -> Result<SourceKind> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let mut head = Vec::with_capacity(DETECT_BYTES);
    file.take(DETECT_BYTES as u64)
        .read_to_end(&mut head)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let found = detect_bytes(&head, ext == "vmx");
    let expected = match ext.as_str() {
        "ova" => Some(SourceKind::Ova),
        "ovf" => Some(SourceKind::Ovf),
        "vmx" => Some(SourceKind::Vmx),
        _ => None,
    };
    match expected {
        Some(k) if k != found => Err(Error::corrupt(
            format!(
                "{} is named like an {} but its content is not one",
                path.display(),
                ext.to_ascii_uppercase()
            ),
            0,
        )),
        _ => Ok(found),
    }
}

/// Bytes read to detect a source's kind.
const DETECT_BYTES: usize = 64 << 10;

/// [`detect`] over a file's first bytes; `vmx_name` says the file is named `.vmx`.
pub fn detect_bytes(head: &[u8], vmx_name: bool) -> SourceKind {
    if head.len() >= 263 && &head[257..262] == b"ustar" {
        return SourceKind::Ova;
    }
    let text = head.strip_prefix(b"\xef\xbb\xbf".as_slice()).unwrap_or(head);
    let start = text
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(text.len());
    let text = &text[start..];
    let contains = |needle: &[u8]| text.windows(needle.len()).any(|w| w == needle);
    if text.first() == Some(&b'<') && contains(b"Envelope") {
        return SourceKind::Ovf;
    }
    let is_text = !text.is_empty() && !text.contains(&0);
    let vmx_keys = contains(b"config.version") || contains(b"virtualHW.version");
    if is_text && !contains(b"# Disk DescriptorFile") && (vmx_name || vmx_keys) {
        return SourceKind::Vmx;
    }
    SourceKind::Disk
}

/// Reads the VM description at `path`, whatever its kind. `verify_manifest`
/// applies to OVAs.
pub fn load(path: &Path, verify_manifest: bool) -> Result<VmSpec> {
    match detect(path)? {
        SourceKind::Ova => ova::load(path, verify_manifest),
        SourceKind::Ovf => ovf::load(path),
        SourceKind::Vmx => vmx::load(path),
        SourceKind::Disk => Ok(VmSpec::from_disk(path)),
    }
}

/// A VM name from a file name: its stem, or "vm".
pub fn file_stem_name(path: &Path) -> String {
    path.file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty())
        .unwrap_or("vm")
        .to_string()
}

/// Normalises a MAC address to lowercase colon form; None if it is not one.
/// Accepts `:` or `-` separators, or 12 bare hex digits.
pub fn normalize_mac(s: &str) -> Option<String> {
    let hex: String = s.trim().chars().filter(|c| *c != ':' && *c != '-').collect();
    if hex.len() != 12 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let hex = hex.to_ascii_lowercase();
    let parts: Vec<&str> = (0..6).map(|i| &hex[i * 2..i * 2 + 2]).collect();
    Some(parts.join(":"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(
            normalize_mac("00:50:56:AB:cd:01").as_deref(),
            Some("00:50:56:ab:cd:01")
        );
        assert_eq!(
            normalize_mac("00-50-56-ab-cd-01").as_deref(),
            Some("00:50:56:ab:cd:01")
        );
        assert_eq!(
            normalize_mac("005056abcd01").as_deref(),
            Some("00:50:56:ab:cd:01")
        );
        assert_eq!(normalize_mac("00:50:56:ab:cd"), None);
        assert_eq!(normalize_mac("zz:50:56:ab:cd:01"), None);
    }

    #[test]
    fn detection() {
        let mut tar = vec![0u8; 512];
        tar[257..263].copy_from_slice(b"ustar\0");
        assert_eq!(detect_bytes(&tar, false), SourceKind::Ova);
        let ovf = b"\xef\xbb\xbf  <?xml version=\"1.0\"?>\n<Envelope xmlns=\"x\">";
        assert_eq!(detect_bytes(ovf, false), SourceKind::Ovf);
        assert_eq!(
            detect_bytes(b".encoding = \"UTF-8\"\nconfig.version = \"8\"\n", false),
            SourceKind::Vmx
        );
        assert_eq!(detect_bytes(b"memsize = \"1024\"\n", true), SourceKind::Vmx);
        // A VMDK descriptor is key = value text too, but never a VMX.
        let desc = b"# Disk DescriptorFile\nversion=1\nvirtualHW.version = \"8\"";
        assert_eq!(detect_bytes(desc, true), SourceKind::Disk);
        assert_eq!(detect_bytes(&[0u8; 1024], true), SourceKind::Disk);
        assert_eq!(detect_bytes(b"QFI\xfb", false), SourceKind::Disk);
    }

    #[test]
    fn misnamed_sources_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vm.ova");
        std::fs::write(&p, vec![0u8; 4096]).unwrap();
        let e = detect(&p).unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        let p = dir.path().join("disk.img");
        std::fs::write(&p, vec![0u8; 4096]).unwrap();
        assert_eq!(detect(&p).unwrap(), SourceKind::Disk);
    }

    #[test]
    fn disk_defaults() {
        let s = VmSpec::from_disk(Path::new("/x/guest.vmdk"));
        assert_eq!(s.name, "guest");
        assert_eq!((s.vcpus, s.memory_mib, s.nics.len()), (1, 2048, 1));
        assert!(s.render().contains("memory:    2048 MiB"));
    }
}
