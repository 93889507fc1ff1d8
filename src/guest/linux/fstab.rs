//! /etc/fstab and /etc/crypttab: which volumes the guest mounts and unlocks.

use serde::Serialize;

/// Most entries kept from one fstab or crypttab.
pub const MAX_FSTAB_ENTRIES: usize = 4096;

/// How an fstab or crypttab line names its device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum DeviceSpec {
    /// `UUID=...` or `/dev/disk/by-uuid/...` (lowercased).
    Uuid(String),
    /// `LABEL=...` or `/dev/disk/by-label/...`.
    Label(String),
    /// `PARTUUID=...` or `/dev/disk/by-partuuid/...` (lowercased).
    PartUuid(String),
    /// `PARTLABEL=...` or `/dev/disk/by-partlabel/...`.
    PartLabel(String),
    /// A device path such as `/dev/sda1` or `/dev/mapper/vg-root`.
    Device(String),
    /// Anything else (`tmpfs`, `proc`, an NFS export, `none`).
    Other(String),
}

impl DeviceSpec {
    /// Classifies a device field.
    pub fn parse(s: &str) -> Self {
        let tag = |p: &str| s.strip_prefix(p).map(|v| v.trim_matches('"').to_string());
        if let Some(v) = tag("UUID=").or_else(|| tag("/dev/disk/by-uuid/")) {
            DeviceSpec::Uuid(v.to_lowercase())
        } else if let Some(v) = tag("PARTUUID=").or_else(|| tag("/dev/disk/by-partuuid/")) {
            DeviceSpec::PartUuid(v.to_lowercase())
        } else if let Some(v) = tag("LABEL=").or_else(|| tag("/dev/disk/by-label/")) {
            DeviceSpec::Label(v)
        } else if let Some(v) = tag("PARTLABEL=").or_else(|| tag("/dev/disk/by-partlabel/")) {
            DeviceSpec::PartLabel(v)
        } else if s.starts_with("/dev/") {
            DeviceSpec::Device(s.to_string())
        } else {
            DeviceSpec::Other(s.to_string())
        }
    }
}

/// One fstab line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FstabEntry {
    /// The device, classified.
    pub spec: DeviceSpec,
    /// Where it is mounted ("/", "/boot", "none" for swap).
    pub mountpoint: String,
    /// Filesystem type ("ext4", "xfs", "swap", "auto").
    pub fstype: String,
    /// Mount options, split at commas.
    pub options: Vec<String>,
    /// The dump field (0 when absent).
    pub dump: u32,
    /// The fsck pass field (0 when absent).
    pub pass: u32,
}

impl FstabEntry {
    /// The value of option `name=` if present (e.g. "subvol", "subvolid").
    pub fn option(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .find_map(|o| o.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
    }
    /// The btrfs subvolume path (`subvol=`), if set.
    pub fn subvol(&self) -> Option<&str> {
        self.option("subvol")
    }
    /// The btrfs subvolume id (`subvolid=`), if set and numeric.
    pub fn subvolid(&self) -> Option<u64> {
        self.option("subvolid").and_then(|v| v.parse().ok())
    }
    /// True for swap entries.
    pub fn is_swap(&self) -> bool {
        self.fstype == "swap"
    }
}

/// Undoes fstab's octal escapes (`\040` for a space, `\011` for a tab, `\134` for a backslash).
pub fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (u32::from(b[i + 1] - b'0') << 6)
                | (u32::from(b[i + 2] - b'0') << 3)
                | u32::from(b[i + 3] - b'0');
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits a config line into whitespace-separated fields, ignoring comments.
fn fields(line: &str) -> Option<Vec<&str>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    Some(line.split_whitespace().collect())
}

/// Parses fstab text. Lines with fewer than three fields are skipped.
pub fn parse_fstab(text: &str) -> Vec<FstabEntry> {
    text.lines()
        .filter_map(fields)
        .filter(|f| f.len() >= 3)
        .take(MAX_FSTAB_ENTRIES)
        .map(|f| FstabEntry {
            spec: DeviceSpec::parse(&unescape(f[0])),
            mountpoint: unescape(f[1]),
            fstype: unescape(f[2]),
            options: f
                .get(3)
                .map(|o| o.split(',').map(unescape).collect())
                .unwrap_or_else(|| vec!["defaults".to_string()]),
            dump: f.get(4).and_then(|v| v.parse().ok()).unwrap_or(0),
            pass: f.get(5).and_then(|v| v.parse().ok()).unwrap_or(0),
        })
        .collect()
}

/// One crypttab line: a LUKS (or plain dm-crypt) volume unlocked at boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CrypttabEntry {
    /// The /dev/mapper name it gets.
    pub name: String,
    /// The encrypted device.
    pub device: DeviceSpec,
    /// Key file, or `None` for "none"/"-" (asks for a passphrase).
    pub key_file: Option<String>,
    /// Options, split at commas.
    pub options: Vec<String>,
}

/// Parses crypttab text. Lines with fewer than two fields are skipped.
pub fn parse_crypttab(text: &str) -> Vec<CrypttabEntry> {
    text.lines()
        .filter_map(fields)
        .filter(|f| f.len() >= 2)
        .take(MAX_FSTAB_ENTRIES)
        .map(|f| CrypttabEntry {
            name: unescape(f[0]),
            device: DeviceSpec::parse(&unescape(f[1])),
            key_file: f
                .get(2)
                .filter(|k| !matches!(**k, "none" | "-"))
                .map(|k| unescape(k)),
            options: f
                .get(3)
                .map(|o| o.split(',').map(unescape).collect())
                .unwrap_or_default(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fstab_fields_specs_and_escapes() {
        let t = "# /etc/fstab\n\
            UUID=ABCD-1234 /boot/efi vfat umask=0077 0 1\n\
            /dev/mapper/vg-root / ext4 errors=remount-ro 0 1\n\
            LABEL=my\\040data /srv/my\\040data xfs defaults\n\
            PARTUUID=0A1B-02 none swap sw 0 0\n\
            /dev/disk/by-uuid/1111 /home btrfs subvol=@home,subvolid=257,compress=zstd 0 0\n\
            tmpfs /tmp tmpfs\n\
            PARTLABEL=esp /efi vfat\n\
            short line\n";
        let e = parse_fstab(t);
        assert_eq!(e.len(), 7);
        assert_eq!(e[0].spec, DeviceSpec::Uuid("abcd-1234".into()));
        assert_eq!((e[0].dump, e[0].pass), (0, 1));
        assert_eq!(e[1].spec, DeviceSpec::Device("/dev/mapper/vg-root".into()));
        assert_eq!(e[2].spec, DeviceSpec::Label("my data".into()));
        assert_eq!(e[2].mountpoint, "/srv/my data");
        assert_eq!(e[2].options, ["defaults"]);
        assert!(e[3].is_swap());
        assert_eq!(e[3].spec, DeviceSpec::PartUuid("0a1b-02".into()));
        assert_eq!(e[4].spec, DeviceSpec::Uuid("1111".into()));
        assert_eq!((e[4].subvol(), e[4].subvolid()), (Some("@home"), Some(257)));
        assert_eq!(e[4].option("compress"), Some("zstd"));
        assert_eq!(e[5].spec, DeviceSpec::Other("tmpfs".into()));
        assert_eq!(e[5].options, ["defaults"]);
        assert_eq!(e[6].spec, DeviceSpec::PartLabel("esp".into()));
    }

    #[test]
    fn escapes() {
        assert_eq!(unescape("a\\040b\\011c\\134d"), "a b\tc\\d");
        assert_eq!(unescape("a\\04"), "a\\04");
        assert_eq!(unescape("\\777x"), "\\777x");
    }

    #[test]
    fn crypttab() {
        let c = parse_crypttab(
            "# name dev key opts\nluks-1 UUID=AA none luks,discard\nswap /dev/sda3 /dev/urandom swap\nhome /dev/sdb1\n",
        );
        assert_eq!(c.len(), 3);
        assert_eq!(c[0].device, DeviceSpec::Uuid("aa".into()));
        assert_eq!(c[0].key_file, None);
        assert_eq!(c[0].options, ["luks", "discard"]);
        assert_eq!(c[1].key_file.as_deref(), Some("/dev/urandom"));
        assert!(c[2].options.is_empty());
    }

    #[test]
    fn entry_cap() {
        let t = "tmpfs /t tmpfs\n".repeat(MAX_FSTAB_ENTRIES + 5);
        assert_eq!(parse_fstab(&t).len(), MAX_FSTAB_ENTRIES);
    }
}
