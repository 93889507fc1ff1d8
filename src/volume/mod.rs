//! The volume layer: partition tables (MBR, GPT), LVM2 logical volumes, and
//! the signatures of things we detect but do not open (LUKS, BitLocker,
//! swap, mdraid). Everything here works over any [`BlockSource`] and never
//! writes.

pub mod gpt;
pub mod lvm;
pub mod mbr;
pub mod signature;

use serde::Serialize;
use std::sync::Arc;
use v2x_formats::block::{BlockSource, SubRange};
use v2x_formats::{Error, Result};

/// How the volume was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum VolumeKind {
    /// A whole disk with no partition table.
    WholeDisk,
    /// A partition of an MBR or GPT table.
    Partition {
        /// "mbr" or "gpt".
        scheme: String,
        /// Partition number as Linux names it (1-4 primary, 5+ logical for MBR).
        number: u32,
        /// Byte offset on the disk.
        start: u64,
        /// Length in bytes.
        len: u64,
        /// MBR type byte as "0x83", or the GPT type GUID (lowercase, dashed).
        type_id: String,
        /// GPT partition GUID (lowercase, dashed).
        #[serde(skip_serializing_if = "Option::is_none")]
        part_uuid: Option<String>,
        /// GPT partition name.
        #[serde(skip_serializing_if = "Option::is_none")]
        part_label: Option<String>,
        /// MBR active flag, or GPT legacy-BIOS-bootable attribute.
        bootable: bool,
    },
    /// An LVM2 logical volume.
    LogicalVolume {
        /// Volume group name.
        vg: String,
        /// Logical volume name.
        lv: String,
        /// LV UUID as LVM prints it.
        uuid: String,
    },
}

/// What a volume holds, as far as signatures tell without opening it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Content {
    /// Nothing we recognise (maybe a filesystem: the fs layer probes next).
    Unknown,
    /// An LVM2 physical volume (its LVs are listed as volumes of their own).
    LvmPv {
        /// PV UUID.
        uuid: String,
    },
    /// A LUKS container (not unlocked).
    Luks {
        /// LUKS version, 1 or 2.
        version: u16,
        /// Container UUID.
        uuid: String,
    },
    /// A BitLocker-encrypted volume (not unlocked).
    BitLocker,
    /// Linux swap.
    Swap {
        /// Swap UUID, if set.
        #[serde(skip_serializing_if = "Option::is_none")]
        uuid: Option<String>,
        /// Swap label, if set.
        #[serde(skip_serializing_if = "Option::is_none")]
        label: Option<String>,
    },
    /// An mdraid member.
    MdRaid {
        /// Array UUID.
        uuid: String,
        /// RAID level ("raid1", ...).
        level: String,
    },
    /// A partition table nested inside a partition (its partitions are not opened).
    PartitionTable,
}

/// One volume: a readable byte range that may hold a filesystem.
#[derive(Clone)]
pub struct Volume {
    /// Linux-style name: "sda", "sda1", "sdb5", or "vg/lv" for an LV.
    pub name: String,
    /// Index of the disk it lives on (for an LV: of its first segment's PV).
    pub disk: usize,
    /// How it was found.
    pub kind: VolumeKind,
    /// What signatures say it holds.
    pub content: Content,
    /// Its bytes.
    pub source: Arc<dyn BlockSource>,
}

/// Everything the volume layer found on a set of disks.
#[derive(Clone, Default)]
pub struct VolumeSet {
    /// Volumes in disk order, partitions by number, then LVs by VG/LV name.
    pub volumes: Vec<Volume>,
    /// Per disk: "mbr", "gpt" or "none".
    pub tables: Vec<String>,
    /// Things worth reporting (a damaged primary GPT, a missing PV, ...).
    pub warnings: Vec<String>,
}

/// Scans disks for partition tables, LVM and signatures. Disk `i` is named
/// `sd` + letter(i), as a Linux guest would see it on SCSI/SATA.
///
/// A disk without a table is one [`VolumeKind::WholeDisk`] volume. LVM PVs
/// found on any volume are assembled into VGs whose LVs are appended after
/// the disks' volumes (see [`lvm::assemble`] for what happens when a PV is
/// missing). A corrupt partition table is an error naming the disk.
pub fn scan(disks: &[Arc<dyn BlockSource>]) -> Result<VolumeSet> {
    let mut set = VolumeSet::default();
    for (i, disk) in disks.iter().enumerate() {
        let name = disk_name("sd", i);
        let table = read_table(disk.as_ref()).map_err(|e| on_disk(&name, e))?;
        let Some(table) = table else {
            set.tables.push("none".into());
            let content = signature::identify(disk.as_ref()).map_err(|e| on_disk(&name, e))?;
            set.volumes.push(Volume {
                name,
                disk: i,
                kind: VolumeKind::WholeDisk,
                content,
                source: disk.clone(),
            });
            continue;
        };
        set.tables.push(table.scheme.to_string());
        set.warnings
            .extend(table.warnings.iter().map(|w| format!("{name}: {w}")));
        for p in table.entries {
            let pname = partition_name(&name, p.number);
            let source: Arc<dyn BlockSource> =
                Arc::new(SubRange::new(disk.clone(), p.start, p.len, pname.clone())?);
            let content = signature::identify_partition(source.as_ref()).map_err(|e| on_disk(&pname, e))?;
            set.volumes.push(Volume {
                name: pname,
                disk: i,
                kind: VolumeKind::Partition {
                    scheme: table.scheme.to_string(),
                    number: p.number,
                    start: p.start,
                    len: p.len,
                    type_id: p.type_id,
                    part_uuid: p.part_uuid,
                    part_label: p.part_label,
                    bootable: p.bootable,
                },
                content,
                source,
            });
        }
    }
    let lvs = lvm::assemble(&set.volumes, &mut set.warnings)?;
    set.volumes.extend(lvs);
    Ok(set)
}

impl Volume {
    /// The device names a Linux guest could use for this volume (in fstab,
    /// crypttab, the kernel command line): "/dev/sda1"; for an LV both
    /// "/dev/vg/lv" and "/dev/mapper/vg-lv" (hyphens doubled as device-mapper
    /// does).
    pub fn linux_paths(&self) -> Vec<String> {
        match &self.kind {
            VolumeKind::LogicalVolume { vg, lv, .. } => vec![
                format!("/dev/{vg}/{lv}"),
                format!("/dev/mapper/{}-{}", vg.replace('-', "--"), lv.replace('-', "--")),
            ],
            _ => vec![format!("/dev/{}", self.name)],
        }
    }
}

/// A partition-table entry, in bytes, as both schemes report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartEntry {
    /// Linux partition number.
    pub number: u32,
    /// Byte offset on the disk.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// "0x83" or a type GUID.
    pub type_id: String,
    /// GPT partition GUID.
    pub part_uuid: Option<String>,
    /// GPT partition name.
    pub part_label: Option<String>,
    /// Active flag or legacy-BIOS-bootable attribute.
    pub bootable: bool,
}

/// A partition table read from one disk.
#[derive(Debug, Clone)]
pub struct Table {
    /// "mbr" or "gpt".
    pub scheme: &'static str,
    /// Logical sector size the table was read with: 512 or 4096.
    pub sector_size: u64,
    /// Partitions by number.
    pub entries: Vec<PartEntry>,
    /// Repairs and oddities (backup GPT used, hybrid MBR, ...).
    pub warnings: Vec<String>,
}

/// Reads the partition table of one disk, or None when it has none.
/// GPT wins over a protective or hybrid MBR.
pub fn read_table(disk: &dyn BlockSource) -> Result<Option<Table>> {
    if disk.size() < 512 {
        return Ok(None);
    }
    let sector0 = read_vec(disk, 0, 512, "MBR")?;
    let mbr = mbr::parse_boot_record(&sector0);
    let protective = mbr
        .as_ref()
        .is_some_and(|e| e.iter().any(|p| p.ptype == mbr::PROTECTIVE_TYPE));
    if protective {
        let hybrid = mbr
            .as_ref()
            .is_some_and(|e| e.iter().any(|p| p.ptype != 0 && p.ptype != mbr::PROTECTIVE_TYPE));
        let mut table = gpt::read(disk)?;
        if hybrid {
            table
                .warnings
                .push("hybrid MBR: its MBR entries are ignored, the GPT is used".into());
        }
        return Ok(Some(table));
    }
    match mbr {
        Some(entries) => mbr::read(disk, &entries).map(Some),
        None if gpt::has_signature(disk)? => {
            let mut table = gpt::read(disk)?;
            table.warnings.push("GPT without a protective MBR".into());
            Ok(Some(table))
        }
        None => Ok(None),
    }
}

/// "sda" + 1 = "sda1"; names ending in a digit take a "p" ("nvme0n1p1").
fn partition_name(disk: &str, number: u32) -> String {
    if disk.ends_with(|c: char| c.is_ascii_digit()) {
        format!("{disk}p{number}")
    } else {
        format!("{disk}{number}")
    }
}

/// Prefixes a corruption message with the name of the disk it was found on.
fn on_disk(name: &str, e: Error) -> Error {
    match e {
        Error::Corrupt { what, offset } => Error::corrupt(format!("{name}: {what}"), offset),
        other => other,
    }
}

/// Reads `len` bytes at `off`; a structure that lies past the end of the
/// source is corruption of whatever pointed there.
pub(crate) fn read_vec(src: &dyn BlockSource, off: u64, len: usize, what: &str) -> Result<Vec<u8>> {
    let size = src.size();
    if off.checked_add(len as u64).is_none_or(|end| end > size) {
        return Err(Error::corrupt(
            format!("{what} ({len} bytes at {off:#x}) lies past the end of the {size}-byte volume"),
            off,
        ));
    }
    let mut v = vec![0u8; len];
    src.read_at(off, &mut v)?;
    Ok(v)
}

/// A borrowed byte range of a source, for probing candidate partitions
/// before any are committed to (a [`SubRange`] needs an owned `Arc`).
pub(crate) struct Window<'a> {
    inner: &'a dyn BlockSource,
    offset: u64,
    len: u64,
}

impl<'a> Window<'a> {
    /// `[offset, offset + len)` of `inner`, which must lie inside it.
    pub(crate) fn new(inner: &'a dyn BlockSource, offset: u64, len: u64) -> Result<Self> {
        v2x_formats::block::check_range(inner.size(), offset, len)?;
        Ok(Window { inner, offset, len })
    }
}

impl BlockSource for Window<'_> {
    fn size(&self) -> u64 {
        self.len
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        v2x_formats::block::check_range(self.len, offset, buf.len() as u64)?;
        self.inner.read_at(self.offset + offset, buf)
    }
    fn map(&self, start: u64, len: u64) -> Result<Vec<v2x_formats::Extent>> {
        v2x_formats::block::check_range(self.len, start, len)?;
        let mut out = self.inner.map(self.offset + start, len)?;
        for e in &mut out {
            e.start -= self.offset;
        }
        Ok(out)
    }
    fn info(&self) -> v2x_formats::ImageInfo {
        self.inner.info()
    }
}

/// Little-endian u16 at `at`; the caller sized `b`.
pub(crate) fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// Little-endian u32 at `at`; the caller sized `b`.
pub(crate) fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Little-endian u64 at `at`; the caller sized `b`.
pub(crate) fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// The Linux name of disk `index`: sda, sdb, ..., sdz, sdaa, ...
pub fn disk_name(prefix: &str, index: usize) -> String {
    let mut n = index;
    let mut letters = Vec::new();
    loop {
        letters.push(b'a' + (n % 26) as u8);
        if n < 26 {
            break;
        }
        n = n / 26 - 1;
    }
    letters.reverse();
    format!("{prefix}{}", String::from_utf8_lossy(&letters))
}

#[cfg(test)]
mod tests {
    #[test]
    fn disk_names_follow_linux() {
        assert_eq!(super::disk_name("sd", 0), "sda");
        assert_eq!(super::disk_name("sd", 25), "sdz");
        assert_eq!(super::disk_name("sd", 26), "sdaa");
        assert_eq!(super::disk_name("vd", 27), "vdab");
    }
    #[test]
    fn linux_paths_double_hyphens_for_device_mapper() {
        use super::*;
        let src: Arc<dyn BlockSource> = Arc::new(
            v2x_formats::raw::RawImage::new(v2x_formats::file::HostFile::from_bytes("d", vec![0; 512]))
                .unwrap(),
        );
        let mut v = Volume {
            name: "my-vg/root-lv".into(),
            disk: 0,
            kind: VolumeKind::LogicalVolume {
                vg: "my-vg".into(),
                lv: "root-lv".into(),
                uuid: String::new(),
            },
            content: Content::Unknown,
            source: src,
        };
        assert_eq!(
            v.linux_paths(),
            ["/dev/my-vg/root-lv", "/dev/mapper/my--vg-root--lv"]
        );
        v.kind = VolumeKind::WholeDisk;
        v.name = "sdb".into();
        assert_eq!(v.linux_paths(), ["/dev/sdb"]);
        assert_eq!(partition_name("sda", 5), "sda5");
        assert_eq!(partition_name("nvme0n1", 2), "nvme0n1p2");
    }
}
