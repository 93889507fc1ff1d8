//! Signatures of things a volume may hold that v2x detects but does not open:
//! LUKS, BitLocker, swap, mdraid members, LVM PVs and nested partition tables.
//! Detection reads a few sectors at the start (and, for mdraid 1.0 and 0.90,
//! near the end) and never follows pointers.

use super::{gpt, le32, lvm, mbr, Content};
use v2x_formats::block::BlockSource;
use v2x_formats::Result;

/// Bytes read from the start of a volume: the largest swap page size.
const HEAD_LEN: u64 = 65536;

/// Magic of both mdraid superblock families (little-endian on disk).
const MD_MAGIC: u32 = 0xa92b_4efc;

/// Page sizes at whose end a swap signature may sit.
const SWAP_PAGE_SIZES: [usize; 4] = [4096, 8192, 16384, 65536];

/// What `src` holds, judging by signatures. Partition tables are not looked
/// for: use this on whole disks, whose tables the caller has already read.
pub fn identify(src: &dyn BlockSource) -> Result<Content> {
    let len = src.size().min(HEAD_LEN) as usize;
    let mut head = vec![0u8; len];
    src.read_at(0, &mut head)?;
    if head.len() >= 208 && head[..6] == *b"LUKS\xba\xbe" {
        return Ok(Content::Luks {
            version: u16::from_be_bytes([head[6], head[7]]),
            uuid: c_string(&head[168..208]),
        });
    }
    if let Some(uuid) = lvm::label::pv_uuid(src)? {
        return Ok(Content::LvmPv { uuid });
    }
    if head.len() >= 11 && head[3..11] == *b"-FVE-FS-" {
        return Ok(Content::BitLocker);
    }
    for ps in SWAP_PAGE_SIZES {
        if head.len() >= ps && matches!(&head[ps - 10..ps], b"SWAPSPACE2" | b"SWAP-SPACE") {
            return Ok(swap(&head, &head[ps - 10..ps] == b"SWAPSPACE2"));
        }
    }
    if let Some(md) = mdraid(src, &head)? {
        return Ok(md);
    }
    Ok(Content::Unknown)
}

/// Like [`identify`], and also notices a partition table nested inside a
/// partition (its partitions are not opened).
pub fn identify_partition(src: &dyn BlockSource) -> Result<Content> {
    let c = identify(src)?;
    if c != Content::Unknown {
        return Ok(c);
    }
    if src.size() >= 1024 {
        let mut s = [0u8; 512];
        src.read_at(0, &mut s)?;
        let table = mbr::parse_boot_record(&s)
            .is_some_and(|e| e.iter().any(|p| p.ptype != 0 && p.sectors != 0 && p.start != 0));
        if table || gpt::has_signature(src)? {
            return Ok(Content::PartitionTable);
        }
    }
    Ok(Content::Unknown)
}

/// True when `src` starts with anything this module or the filesystem probe
/// recognises; used to guess the sector size of MBR disks.
pub fn recognisable(src: &dyn BlockSource) -> Result<bool> {
    Ok(identify(src)? != Content::Unknown || crate::fs::probe::probe(src)?.is_some())
}

/// True when a sector ending in 0x55AA is a filesystem's boot sector (FAT,
/// exFAT, NTFS, BitLocker) rather than a partition table.
pub fn is_fs_boot_sector(s: &[u8]) -> bool {
    if s.len() < 512 {
        return false;
    }
    let oem = &s[3..11];
    if oem == b"NTFS    " || oem == b"EXFAT   " || oem == b"-FVE-FS-" {
        return true;
    }
    if &s[54..57] == b"FAT" || &s[82..87] == b"FAT32" {
        return true;
    }
    // A BIOS parameter block: a jump, a sector size, clusters, reserved
    // sectors and one or two FATs.
    let jump = s[0] == 0xe9 || (s[0] == 0xeb && s[2] == 0x90);
    let bps = u16::from_le_bytes([s[11], s[12]]);
    jump && matches!(bps, 512 | 1024 | 2048 | 4096)
        && s[13].is_power_of_two()
        && u16::from_le_bytes([s[14], s[15]]) != 0
        && matches!(s[16], 1 | 2)
}

/// The swap header after the first 1024 bytes: version, last page, bad
/// pages, then a 16-byte UUID and a 16-byte label (version 2 only).
fn swap(head: &[u8], v2: bool) -> Content {
    if !v2 || head.len() < 1068 {
        return Content::Swap {
            uuid: None,
            label: None,
        };
    }
    let u = &head[1036..1052];
    let label = c_string(&head[1052..1068]);
    Content::Swap {
        uuid: (!u.iter().all(|b| *b == 0)).then(|| dashed_uuid(u)),
        label: (!label.is_empty()).then_some(label),
    }
}

/// Looks for an mdraid superblock: 1.1 at 0, 1.2 at 4 KiB, 1.0 at 8 KiB
/// before the end rounded down to 4 KiB, 0.90 at 64 KiB before the end
/// rounded down to 64 KiB.
fn mdraid(src: &dyn BlockSource, head: &[u8]) -> Result<Option<Content>> {
    for at in [0usize, 4096] {
        if head.len() >= at + 256 && le32(head, at) == MD_MAGIC && le32(head, at + 4) == 1 {
            return Ok(Some(md1(&head[at..at + 256])));
        }
    }
    let size = src.size();
    let sectors = size >> 9;
    if sectors >= 16 {
        let at = ((sectors - 16) & !7) << 9;
        let mut sb = [0u8; 256];
        if at + 256 <= size {
            src.read_at(at, &mut sb)?;
            if le32(&sb, 0) == MD_MAGIC && le32(&sb, 4) == 1 {
                return Ok(Some(md1(&sb)));
            }
        }
    }
    if sectors >= 256 {
        let at = ((sectors & !127) - 128) << 9;
        let mut sb = [0u8; 256];
        src.read_at(at, &mut sb)?;
        if le32(&sb, 0) == MD_MAGIC && le32(&sb, 4) == 0 {
            let words = [le32(&sb, 20), le32(&sb, 52), le32(&sb, 56), le32(&sb, 60)];
            return Ok(Some(Content::MdRaid {
                uuid: words.map(|w| format!("{w:08x}")).join(":"),
                level: md_level(le32(&sb, 28) as i32),
            }));
        }
    }
    Ok(None)
}

/// A 1.x superblock: set UUID at 16, level at 72.
fn md1(sb: &[u8]) -> Content {
    let uuid: Vec<String> = sb[16..32]
        .chunks(4)
        .map(|c| c.iter().map(|b| format!("{b:02x}")).collect())
        .collect();
    Content::MdRaid {
        uuid: uuid.join(":"),
        level: md_level(le32(sb, 72) as i32),
    }
}

/// mdadm's name for a level number.
fn md_level(level: i32) -> String {
    match level {
        -4 => "multipath".into(),
        -1 => "linear".into(),
        -5 => "faulty".into(),
        n if n >= 0 => format!("raid{n}"),
        n => format!("level {n}"),
    }
}

/// A NUL-terminated string in a fixed-size field.
fn c_string(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// A UUID stored as 16 bytes in print order.
fn dashed_uuid(u: &[u8]) -> String {
    let hex: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use v2x_formats::file::HostFile;
    use v2x_formats::raw::RawImage;

    fn src(bytes: Vec<u8>) -> RawImage {
        RawImage::new(HostFile::from_bytes("t", bytes)).unwrap()
    }

    #[test]
    fn mdraid_superblocks_at_each_version_offset() {
        let size = 1 << 20;
        for (at, minor) in [(0usize, "1.1"), (4096, "1.2"), ((size - 8192) & !4095, "1.0")] {
            let mut d = vec![0u8; size];
            d[at..at + 4].copy_from_slice(&MD_MAGIC.to_le_bytes());
            d[at + 4] = 1;
            d[at + 16..at + 32].copy_from_slice(&[0x11; 16]);
            d[at + 72] = 1;
            let c = identify(&src(d)).unwrap();
            assert_eq!(
                c,
                Content::MdRaid {
                    uuid: "11111111:11111111:11111111:11111111".into(),
                    level: "raid1".into()
                },
                "{minor}"
            );
        }
        let mut d = vec![0u8; size];
        let at = size - 65536;
        d[at..at + 4].copy_from_slice(&MD_MAGIC.to_le_bytes());
        d[at + 20] = 0xaa;
        d[at + 28..at + 32].copy_from_slice(&5i32.to_le_bytes());
        let c = identify(&src(d)).unwrap();
        assert_eq!(
            c,
            Content::MdRaid {
                uuid: "000000aa:00000000:00000000:00000000".into(),
                level: "raid5".into()
            }
        );
    }

    #[test]
    fn bitlocker_and_swap_page_sizes() {
        let mut d = vec![0u8; 70000];
        d[3..11].copy_from_slice(b"-FVE-FS-");
        assert_eq!(identify(&src(d)).unwrap(), Content::BitLocker);
        let mut d = vec![0u8; 70000];
        d[65536 - 10..65536].copy_from_slice(b"SWAPSPACE2");
        d[1052..1055].copy_from_slice(b"big");
        assert_eq!(
            identify(&src(d)).unwrap(),
            Content::Swap {
                uuid: None,
                label: Some("big".into())
            }
        );
        // Small volumes are read only as far as they go.
        assert_eq!(identify(&src(vec![0u8; 100])).unwrap(), Content::Unknown);
    }

    #[test]
    fn fat_boot_sector_is_not_a_partition_table() {
        let mut s = vec![0u8; 512];
        s[510] = 0x55;
        s[511] = 0xaa;
        assert!(!is_fs_boot_sector(&s));
        s[0] = 0xeb;
        s[2] = 0x90;
        s[11..13].copy_from_slice(&512u16.to_le_bytes());
        s[13] = 8;
        s[14] = 32;
        s[16] = 2;
        assert!(is_fs_boot_sector(&s));
    }
}
