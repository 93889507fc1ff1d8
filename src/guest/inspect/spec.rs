//! Resolving the device names a guest uses (fstab specs, `root=` arguments)
//! to the volumes v2x found.

use crate::volume::{Content, Volume, VolumeKind};
use std::sync::Arc;

use crate::fs::Filesystem;

/// A volume plus the identity of what it holds, for name resolution.
pub struct Candidate<'a> {
    /// The volume.
    pub volume: &'a Volume,
    /// Its filesystem, if one opened.
    pub fs: Option<&'a Arc<dyn Filesystem>>,
}

impl Candidate<'_> {
    /// The UUID a guest would name this volume by: the filesystem's, else a
    /// swap or LUKS header's.
    pub fn uuid(&self) -> Option<String> {
        if let Some(fs) = self.fs {
            return fs.uuid();
        }
        match &self.volume.content {
            Content::Swap { uuid, .. } => uuid.clone(),
            Content::Luks { uuid, .. } => Some(uuid.clone()),
            _ => None,
        }
    }

    fn label(&self) -> Option<String> {
        if let Some(fs) = self.fs {
            return fs.label();
        }
        match &self.volume.content {
            Content::Swap { label, .. } => label.clone(),
            _ => None,
        }
    }
}

/// Undoes fstab's octal escapes (`\040` for a space).
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') as u32 * 64 + (b[i + 2] - b'0') as u32 * 8 + (b[i + 3] - b'0') as u32;
            if v <= 255 {
                out.push(v as u8);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Strips surrounding quotes from a `KEY=value` spec value.
fn unquote(v: &str) -> &str {
    v.trim_matches('"').trim_matches('\'')
}

/// Splits a whole-disk Linux name into (bus prefix, disk index, partition
/// number): "/dev/sda1" → ("sd", 0, Some(1)), "/dev/xvdb" → ("xvd", 1, None),
/// "/dev/cciss/c0d0p2" → ("cciss", 0, Some(2)), "/dev/nvme0n1p3" → ("nvme", 0, Some(3)).
pub fn parse_disk_device(dev: &str) -> Option<(String, usize, Option<u32>)> {
    let name = dev.strip_prefix("/dev/")?;
    if let Some(rest) = name.strip_prefix("cciss/c0d") {
        return split_num_p(rest).map(|(d, p)| ("cciss".to_string(), d, p));
    }
    if let Some(rest) = name.strip_prefix("nvme0n") {
        let (d, p) = split_num_p(rest)?;
        return Some(("nvme".to_string(), d.checked_sub(1)?, p));
    }
    for prefix in ["xvd", "sd", "hd", "vd"] {
        if let Some(rest) = name.strip_prefix(prefix) {
            let letters: String = rest.chars().take_while(|c| c.is_ascii_lowercase()).collect();
            if letters.is_empty() || letters.len() > 3 {
                return None;
            }
            let digits = &rest[letters.len()..];
            let mut idx: usize = 0;
            for c in letters.bytes() {
                idx = idx * 26 + (c - b'a') as usize + 1;
            }
            let part = if digits.is_empty() {
                None
            } else {
                Some(digits.parse::<u32>().ok()?)
            };
            return Some((prefix.to_string(), idx - 1, part));
        }
    }
    None
}

fn split_num_p(rest: &str) -> Option<(usize, Option<u32>)> {
    match rest.split_once('p') {
        Some((d, p)) => Some((d.parse().ok()?, Some(p.parse().ok()?))),
        None => Some((rest.parse().ok()?, None)),
    }
}

/// Finds the volume a guest device spec names: `UUID=`, `LABEL=`,
/// `PARTUUID=`, `PARTLABEL=`, `/dev/disk/by-*/…`, `/dev/sdXN` and friends,
/// `/dev/mapper/vg-lv`, `/dev/vg/lv`. Returns the index into `cands`.
pub fn resolve(spec: &str, cands: &[Candidate<'_>]) -> Option<usize> {
    let spec = unescape(spec.trim());
    let (key, value) = if let Some(v) = spec.strip_prefix("/dev/disk/by-uuid/") {
        ("UUID", v.to_string())
    } else if let Some(v) = spec.strip_prefix("/dev/disk/by-label/") {
        ("LABEL", v.to_string())
    } else if let Some(v) = spec.strip_prefix("/dev/disk/by-partuuid/") {
        ("PARTUUID", v.to_string())
    } else if let Some(v) = spec.strip_prefix("/dev/disk/by-partlabel/") {
        ("PARTLABEL", v.to_string())
    } else if let Some((k, v)) = spec.split_once('=') {
        (k, unquote(v).to_string())
    } else {
        ("DEV", spec.clone())
    };
    let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    match key {
        "UUID" => cands
            .iter()
            .position(|c| c.uuid().is_some_and(|u| eq(&u, &value))),
        "LABEL" => cands
            .iter()
            .position(|c| c.label().as_deref() == Some(value.as_str())),
        "PARTUUID" => cands.iter().position(
            |c| matches!(&c.volume.kind, VolumeKind::Partition { part_uuid: Some(u), .. } if eq(u, &value)),
        ),
        "PARTLABEL" => cands.iter().position(
            |c| matches!(&c.volume.kind, VolumeKind::Partition { part_label: Some(l), .. } if *l == value),
        ),
        "DEV" => resolve_device(&value, cands),
        _ => None,
    }
}

fn resolve_device(dev: &str, cands: &[Candidate<'_>]) -> Option<usize> {
    // LVM and other names the volume layer knows directly.
    if let Some(i) = cands
        .iter()
        .position(|c| c.volume.linux_paths().iter().any(|p| p == dev))
    {
        return Some(i);
    }
    let (_, disk, part) = parse_disk_device(dev)?;
    cands.iter().position(|c| {
        c.volume.disk == disk
            && match (&c.volume.kind, part) {
                (VolumeKind::WholeDisk, None) => true,
                (VolumeKind::Partition { number, .. }, Some(p)) => *number == p,
                _ => false,
            }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse() {
        assert_eq!(parse_disk_device("/dev/sda1"), Some(("sd".into(), 0, Some(1))));
        assert_eq!(parse_disk_device("/dev/xvdb"), Some(("xvd".into(), 1, None)));
        assert_eq!(parse_disk_device("/dev/sdaa3"), Some(("sd".into(), 26, Some(3))));
        assert_eq!(parse_disk_device("/dev/hdc5"), Some(("hd".into(), 2, Some(5))));
        assert_eq!(
            parse_disk_device("/dev/cciss/c0d1p2"),
            Some(("cciss".into(), 1, Some(2)))
        );
        assert_eq!(
            parse_disk_device("/dev/nvme0n1p3"),
            Some(("nvme".into(), 0, Some(3)))
        );
        assert_eq!(parse_disk_device("/dev/mapper/vg-root"), None);
        assert_eq!(parse_disk_device("/dev/sd"), None);
    }

    #[test]
    fn octal_escapes() {
        assert_eq!(unescape(r"/mnt/my\040disk"), "/mnt/my disk");
        assert_eq!(unescape(r"a\0"), r"a\0");
    }
}
