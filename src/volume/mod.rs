//! The volume layer: partition tables (MBR, GPT), LVM2 logical volumes, and
//! the signatures of things we detect but do not open (LUKS, BitLocker,
//! swap, mdraid). Everything here works over any [`BlockSource`] and never
//! writes.

use serde::Serialize;
use std::sync::Arc;
use v2x_formats::block::BlockSource;
use v2x_formats::Result;

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

impl Volume {
    /// Device names a Linux guest could use for this volume: "/dev/sda1",
    /// or "/dev/vg/lv" and "/dev/mapper/vg-lv" (hyphens doubled) for an LV.
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
pub fn scan(disks: &[Arc<dyn BlockSource>]) -> Result<VolumeSet> {
    let _ = disks;
    Err(v2x_formats::Error::unsupported("volume scan not built yet"))
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
}
