//! Format detection by magic, separate from opening.
//!
//! `detect` looks at the first bytes and the last 512 bytes of a file and
//! names the format. It never opens anything: a file whose magic says qcow2
//! is qcow2, and if its header is damaged the qcow2 opener says so. Nothing
//! with a known magic is ever treated as raw.

use serde::Serialize;
use std::fmt;

/// How many leading bytes `detect` wants to see.
pub const HEAD_LEN: usize = 4096;
/// How many trailing bytes `detect` wants to see (VHD footer, DMG trailer).
pub const TAIL_LEN: usize = 512;

/// A format named by its magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// No known magic: a plain disk image.
    Raw,
    /// qcow2 (QEMU copy-on-write v2/v3).
    Qcow2,
    /// VMDK hosted sparse extent ("KDMV") with optional embedded descriptor.
    VmdkSparse,
    /// VMDK ESXi vmfsSparse delta ("COWD").
    VmdkCowd,
    /// VMDK text descriptor file.
    VmdkDescriptor,
    /// VHD (Virtual PC / Hyper-V gen 1), footer found at the end or at offset 0.
    Vhd,
    /// VHDX (Hyper-V).
    Vhdx,
    /// VirtualBox VDI.
    Vdi,
    /// A format v2x recognises but does not convert.
    OutOfScope(ForeignFormat),
}

/// Formats recognised only so they can be refused by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForeignFormat {
    /// qcow version 1.
    Qcow1,
    /// QEMU enhanced disk.
    Qed,
    /// Bochs growing image.
    Bochs,
    /// Parallels / Virtuozzo image.
    Parallels,
    /// Apple disk image.
    Dmg,
    /// Compressed loop image.
    Cloop,
    /// LUKS-encrypted container.
    Luks,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::VmdkSparse => "vmdk (hosted sparse extent)",
            Format::VmdkCowd => "vmdk (vmfsSparse COWD extent)",
            Format::VmdkDescriptor => "vmdk (descriptor)",
            Format::Vhd => "vpc (VHD)",
            Format::Vhdx => "vhdx",
            Format::Vdi => "vdi",
            Format::OutOfScope(o) => return write!(f, "{o}"),
        };
        f.write_str(s)
    }
}

impl fmt::Display for ForeignFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ForeignFormat::Qcow1 => "qcow (version 1)",
            ForeignFormat::Qed => "qed",
            ForeignFormat::Bochs => "bochs",
            ForeignFormat::Parallels => "parallels",
            ForeignFormat::Dmg => "dmg (Apple disk image)",
            ForeignFormat::Cloop => "cloop",
            ForeignFormat::Luks => "luks (encrypted)",
        })
    }
}

fn at(buf: &[u8], off: usize, magic: &[u8]) -> bool {
    buf.get(off..off + magic.len()) == Some(magic)
}

/// Names the format of a file from its first bytes (`head`, up to
/// [`HEAD_LEN`]) and its last bytes (`tail`, up to [`TAIL_LEN`]; empty when
/// the file is shorter than that or not seekable).
pub fn detect(head: &[u8], tail: &[u8]) -> Format {
    if at(head, 0, b"QFI\xfb") {
        return match head
            .get(4..8)
            .map(|v| u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
        {
            Some(1) => Format::OutOfScope(ForeignFormat::Qcow1),
            // Versions other than 2/3 are still qcow2's magic: let its opener refuse them.
            _ => Format::Qcow2,
        };
    }
    if at(head, 0, b"KDMV") {
        return Format::VmdkSparse;
    }
    if at(head, 0, b"COWD") {
        return Format::VmdkCowd;
    }
    if at(head, 0, b"vhdxfile") {
        return Format::Vhdx;
    }
    if at(head, 0, b"conectix") {
        return Format::Vhd;
    }
    if at(head, 0x40, &0xbeda_107f_u32.to_le_bytes()) {
        return Format::Vdi;
    }
    if at(head, 0, b"QED\0") {
        return Format::OutOfScope(ForeignFormat::Qed);
    }
    if at(head, 0, b"Bochs Virtual HD Image") {
        return Format::OutOfScope(ForeignFormat::Bochs);
    }
    if at(head, 0, b"WithoutFreeSpace") || at(head, 0, b"WithouFreSpacExt") {
        return Format::OutOfScope(ForeignFormat::Parallels);
    }
    if at(head, 0, b"LUKS\xba\xbe") {
        return Format::OutOfScope(ForeignFormat::Luks);
    }
    if at(head, 0, b"#!/bin/sh") && contains(&head[..head.len().min(256)], b"#V2.0 Format") {
        return Format::OutOfScope(ForeignFormat::Cloop);
    }
    if is_vmdk_descriptor(head) {
        return Format::VmdkDescriptor;
    }
    // Fixed VHDs carry their only footer in the last 512 bytes (older
    // writers used 511): qemu misses this and calls them raw.
    if at(tail, tail.len().saturating_sub(512), b"conectix")
        || at(tail, tail.len().saturating_sub(511), b"conectix")
    {
        return Format::Vhd;
    }
    if at(tail, tail.len().saturating_sub(512), b"koly") {
        return Format::OutOfScope(ForeignFormat::Dmg);
    }
    Format::Raw
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A VMDK descriptor is a small text file starting with a comment or a
/// `version=` line and naming a createType.
fn is_vmdk_descriptor(head: &[u8]) -> bool {
    let text = &head[..head.len().min(1024)];
    let trimmed = text
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .map(|p| &text[p..]);
    let Some(t) = trimmed else { return false };
    (t.starts_with(b"# Disk DescriptorFile") || t.starts_with(b"# Disk Descriptor File"))
        || ((t.starts_with(b"version=") || t.starts_with(b"#")) && contains(text, b"createType"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_each_magic() {
        let mut h = vec![0u8; 512];
        h[..8].copy_from_slice(b"QFI\xfb\0\0\0\x03");
        assert_eq!(detect(&h, &[]), Format::Qcow2);
        h[..8].copy_from_slice(b"QFI\xfb\0\0\0\x01");
        assert_eq!(detect(&h, &[]), Format::OutOfScope(ForeignFormat::Qcow1));
        h[..8].copy_from_slice(b"vhdxfile");
        assert_eq!(detect(&h, &[]), Format::Vhdx);
        assert_eq!(
            detect(b"# Disk DescriptorFile\nversion=1\n", &[]),
            Format::VmdkDescriptor
        );
    }

    #[test]
    fn fixed_vhd_is_found_by_its_footer() {
        let head = vec![0u8; 512];
        let mut tail = vec![0u8; 512];
        tail[..8].copy_from_slice(b"conectix");
        assert_eq!(detect(&head, &tail), Format::Vhd);
    }

    #[test]
    fn mbr_is_raw() {
        let mut h = vec![0u8; 512];
        h[510] = 0x55;
        h[511] = 0xaa;
        assert_eq!(detect(&h, &h), Format::Raw);
        assert_eq!(detect(&[], &[]), Format::Raw);
    }
}
