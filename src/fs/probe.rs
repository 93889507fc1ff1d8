//! Filesystem detection by superblock, separate from opening.

use super::{Filesystem, FsKind};
use std::sync::Arc;
use v2x_formats::block::BlockSource;
use v2x_formats::Result;

/// Looks for a known filesystem superblock on `source`. Reads only a few
/// sectors; never parses beyond the magic and the fields needed to tell
/// families apart.
pub fn probe(source: &dyn BlockSource) -> Result<Option<FsKind>> {
    let size = source.size();
    let mut head = vec![0u8; 70 * 1024];
    let n = head.len().min(size as usize);
    source.read_at(0, &mut head[..n])?;
    head.truncate(n);
    // ext2/3/4: magic 0xEF53 at byte 1080.
    if head.len() >= 1082 && head[1080..1082] == [0x53, 0xef] {
        return Ok(Some(FsKind::Ext));
    }
    // XFS: "XFSB" at byte 0.
    if head.starts_with(b"XFSB") {
        return Ok(Some(FsKind::Xfs));
    }
    // NTFS: OEM id at byte 3.
    if head.len() >= 11 && &head[3..11] == b"NTFS    " {
        return Ok(Some(FsKind::Ntfs));
    }
    // btrfs: "_BHRfS_M" at 64 KiB + 64.
    if head.len() >= 0x10048 && &head[0x10040..0x10048] == b"_BHRfS_M" {
        return Ok(Some(FsKind::Btrfs));
    }
    // FAT: a plausible BPB (see fat::looks_like_fat) plus a FAT type string.
    if super::fat::looks_like_fat(&head) {
        let fat16 = &head[54..59] == b"FAT12" || &head[54..59] == b"FAT16";
        let fat32 = &head[82..87] == b"FAT32";
        if fat16 || fat32 {
            return Ok(Some(FsKind::Fat));
        }
    }
    Ok(None)
}

/// Probes `source` and opens the filesystem found there.
pub fn open(source: Arc<dyn BlockSource>) -> Result<Option<Arc<dyn Filesystem>>> {
    let Some(kind) = probe(source.as_ref())? else {
        return Ok(None);
    };
    open_as(kind, source).map(Some)
}

/// Opens `source` as a filesystem of the given family.
pub fn open_as(kind: FsKind, source: Arc<dyn BlockSource>) -> Result<Arc<dyn Filesystem>> {
    match kind {
        FsKind::Ext => Ok(Arc::new(super::ext4::ExtFs::open(source)?)),
        FsKind::Ntfs => Ok(Arc::new(super::ntfs::NtfsFs::open(source)?)),
        FsKind::Fat => Ok(Arc::new(super::fat::FatFs::open(source)?)),
        FsKind::Xfs => Ok(Arc::new(super::xfs::Xfs::open(source)?)),
        FsKind::Btrfs => Ok(Arc::new(super::btrfs::Btrfs::open(source)?)),
    }
}
