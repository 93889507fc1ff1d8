//! MBR (DOS) partition tables: four primary entries, and logical partitions
//! in a chain of extended boot records (EBRs) inside an extended partition.
//! Numbering follows Linux: 1-4 primary, 5+ logical in chain order.

use super::{read_vec, signature, PartEntry, Table, Window};
use std::collections::HashSet;
use v2x_formats::block::BlockSource;
use v2x_formats::error::check_limit;
use v2x_formats::{Error, Result};

/// Most logical partitions followed along an EBR chain.
pub const MAX_MBR_LOGICAL: u64 = 256;

/// Type byte of the protective entry of a GPT disk.
pub const PROTECTIVE_TYPE: u8 = 0xee;

/// Type bytes of extended partitions (CHS, LBA, Linux).
const EXTENDED_TYPES: [u8; 3] = [0x05, 0x0f, 0x85];

/// Offset of the first of the four entries in a boot record.
const ENTRIES_AT: usize = 446;

/// One 16-byte entry of a boot record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MbrEntry {
    /// 0x80 when active.
    pub status: u8,
    /// Partition type byte.
    pub ptype: u8,
    /// First sector, relative to whatever the table is relative to.
    pub start: u32,
    /// Length in sectors.
    pub sectors: u32,
}

impl MbrEntry {
    fn is_extended(&self) -> bool {
        EXTENDED_TYPES.contains(&self.ptype)
    }
    fn is_used(&self) -> bool {
        self.ptype != 0 && self.sectors != 0
    }
}

/// Parses the four entries of a 512-byte boot record, or None when the
/// sector is not a partition table: no 0x55AA signature, status bytes other
/// than 0x00/0x80, or the boot sector of a filesystem (FAT, NTFS, exFAT,
/// BitLocker) which also ends in 0x55AA.
pub fn parse_boot_record(sector: &[u8]) -> Option<[MbrEntry; 4]> {
    if sector.len() < 512 || sector[510..512] != [0x55, 0xaa] {
        return None;
    }
    if signature::is_fs_boot_sector(sector) {
        return None;
    }
    let mut out = [MbrEntry {
        status: 0,
        ptype: 0,
        start: 0,
        sectors: 0,
    }; 4];
    for (i, e) in out.iter_mut().enumerate() {
        let b = &sector[ENTRIES_AT + 16 * i..ENTRIES_AT + 16 * (i + 1)];
        if b[0] != 0 && b[0] != 0x80 {
            return None;
        }
        *e = MbrEntry {
            status: b[0],
            ptype: b[4],
            start: super::le32(b, 8),
            sectors: super::le32(b, 12),
        };
    }
    Some(out)
}

/// Reads the partitions of an MBR disk whose boot record parsed as `primary`.
/// The sector size is 512 unless the partitions only make sense with 4096
/// (see [`guess_sector_size`]).
pub fn read(disk: &dyn BlockSource, primary: &[MbrEntry; 4]) -> Result<Table> {
    let ss = guess_sector_size(disk, primary)?;
    let mut table = Table {
        scheme: "mbr",
        sector_size: ss,
        entries: Vec::new(),
        warnings: Vec::new(),
    };
    let mut extended = None;
    for (i, e) in primary.iter().enumerate() {
        if !e.is_used() {
            continue;
        }
        let field_at = (ENTRIES_AT + 16 * i) as u64;
        if e.is_extended() {
            if extended.is_some() {
                table
                    .warnings
                    .push(format!("second extended partition {} ignored", i + 1));
            } else {
                extended = Some((e.start as u64, e.sectors as u64, field_at));
            }
            continue;
        }
        let (start, len) = span(disk, ss, e.start as u64, e.sectors as u64, i as u32 + 1, field_at)?;
        table.entries.push(entry(i as u32 + 1, start, len, e));
    }
    if let Some((ext_start, ext_len, field_at)) = extended {
        span(disk, ss, ext_start, ext_len, 0, field_at)?;
        read_logical(disk, ss, ext_start, &mut table)?;
    }
    Ok(table)
}

/// Follows the EBR chain of the extended partition starting at sector
/// `ext_start`. Each EBR's first entry is a logical partition relative to
/// that EBR; its second points to the next EBR, relative to `ext_start`.
fn read_logical(disk: &dyn BlockSource, ss: u64, ext_start: u64, table: &mut Table) -> Result<()> {
    let mut seen = HashSet::new();
    let mut ebr = ext_start;
    let mut number = 5u32;
    loop {
        let off = ebr
            .checked_mul(ss)
            .ok_or_else(|| Error::corrupt("EBR sector number overflows", 0))?;
        if !seen.insert(ebr) {
            return Err(Error::corrupt(
                format!("EBR chain loops back to sector {ebr}"),
                off,
            ));
        }
        check_limit("MBR logical partitions", seen.len() as u64, MAX_MBR_LOGICAL)?;
        let sector = read_vec(disk, off, 512, "EBR")?;
        if sector.iter().all(|b| *b == 0) {
            return Ok(()); // An empty extended partition.
        }
        if sector[510..512] != [0x55, 0xaa] {
            return Err(Error::corrupt("EBR lacks the 0x55AA signature", off + 510));
        }
        let part = |i: usize| MbrEntry {
            status: sector[ENTRIES_AT + 16 * i],
            ptype: sector[ENTRIES_AT + 16 * i + 4],
            start: super::le32(&sector, ENTRIES_AT + 16 * i + 8),
            sectors: super::le32(&sector, ENTRIES_AT + 16 * i + 12),
        };
        let (logical, next) = (part(0), part(1));
        if logical.is_used() && !logical.is_extended() {
            let field_at = off + ENTRIES_AT as u64 + 8;
            let first = ebr
                .checked_add(logical.start as u64)
                .ok_or_else(|| Error::corrupt("logical partition start overflows", field_at))?;
            let (start, len) = span(disk, ss, first, logical.sectors as u64, number, field_at)?;
            table.entries.push(entry(number, start, len, &logical));
            number += 1;
        }
        if !next.is_used() || !next.is_extended() {
            return Ok(());
        }
        ebr = ext_start
            .checked_add(next.start as u64)
            .ok_or_else(|| Error::corrupt("next EBR sector overflows", off + 16 + ENTRIES_AT as u64))?;
    }
}

/// Byte start and length of `sectors` sectors at `first`, checked against
/// the disk. `field_at` is the byte offset of the entry's start field.
fn span(
    disk: &dyn BlockSource,
    ss: u64,
    first: u64,
    sectors: u64,
    number: u32,
    field_at: u64,
) -> Result<(u64, u64)> {
    let what = if number == 0 {
        "extended partition".to_string()
    } else {
        format!("partition {number}")
    };
    let start = first.checked_mul(ss);
    let len = sectors.checked_mul(ss);
    match (start, len) {
        (Some(s), Some(l)) if s.checked_add(l).is_some_and(|e| e <= disk.size()) => Ok((s, l)),
        _ => Err(Error::corrupt(
            format!(
                "{what} (start sector {first}, {sectors} sectors of {ss} bytes) lies past the end of the {}-byte disk",
                disk.size()
            ),
            field_at,
        )),
    }
}

fn entry(number: u32, start: u64, len: u64, e: &MbrEntry) -> PartEntry {
    PartEntry {
        number,
        start,
        len,
        type_id: format!("{:#04x}", e.ptype),
        part_uuid: None,
        part_label: None,
        bootable: e.status == 0x80,
    }
}

/// MBR has no sector-size field. A 4096-byte-sector disk is recognised when
/// its primary partitions fit the disk at 4096 bytes per sector and more of
/// them start with a recognisable signature (filesystem, swap, LVM, LUKS,
/// EBR...) at the 4096 reading than at the 512 one.
pub fn guess_sector_size(disk: &dyn BlockSource, primary: &[MbrEntry; 4]) -> Result<u64> {
    let used: Vec<_> = primary.iter().filter(|e| e.is_used()).collect();
    let fits = |ss: u64| {
        used.iter().all(|e| {
            (e.start as u64 + e.sectors as u64)
                .checked_mul(ss)
                .is_some_and(|end| end <= disk.size())
        })
    };
    if used.is_empty() || !fits(4096) {
        return Ok(512);
    }
    let score = |ss: u64| -> Result<usize> {
        let mut n = 0;
        for e in &used {
            let part = Window::new(disk, e.start as u64 * ss, e.sectors as u64 * ss)?;
            if e.is_extended() {
                let mut b = [0u8; 512];
                if part.size() >= 512 {
                    part.read_at(0, &mut b)?;
                }
                n += usize::from(b[510..512] == [0x55, 0xaa]);
            } else if signature::recognisable(&part)? {
                n += 1;
            }
        }
        Ok(n)
    };
    Ok(if score(4096)? > score(512)? { 4096 } else { 512 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use v2x_formats::file::HostFile;
    use v2x_formats::raw::RawImage;

    fn set_entry(d: &mut [u8], sector: usize, i: usize, ptype: u8, start: u32, len: u32) {
        let at = sector * 512 + ENTRIES_AT + 16 * i;
        d[at + 4] = ptype;
        d[at + 8..at + 12].copy_from_slice(&start.to_le_bytes());
        d[at + 12..at + 16].copy_from_slice(&len.to_le_bytes());
        d[sector * 512 + 510] = 0x55;
        d[sector * 512 + 511] = 0xaa;
    }

    /// A disk whose extended partition at sector 1 holds `n` logicals, one
    /// sector each, after an EBR each.
    fn chain(n: usize) -> RawImage {
        let sectors = 2 + 2 * n;
        let mut d = vec![0u8; sectors * 512];
        set_entry(&mut d, 0, 0, 0x05, 1, (sectors - 1) as u32);
        for k in 0..n {
            let ebr = 1 + 2 * k;
            set_entry(&mut d, ebr, 0, 0x83, 1, 1);
            if k + 1 < n {
                set_entry(&mut d, ebr, 1, 0x05, (2 * (k + 1)) as u32, 2);
            }
        }
        RawImage::new(HostFile::from_bytes("chain", d)).unwrap()
    }

    #[test]
    fn logical_partitions_are_numbered_from_5_and_capped() {
        let disk = chain(3);
        let mut s = [0u8; 512];
        disk.read_at(0, &mut s).unwrap();
        let t = read(&disk, &parse_boot_record(&s).unwrap()).unwrap();
        let got: Vec<_> = t.entries.iter().map(|e| (e.number, e.start)).collect();
        assert_eq!(got, [(5, 2 * 512), (6, 4 * 512), (7, 6 * 512)]);
        let disk = chain(MAX_MBR_LOGICAL as usize + 1);
        disk.read_at(0, &mut s).unwrap();
        assert!(matches!(
            read(&disk, &parse_boot_record(&s).unwrap()),
            Err(Error::LimitExceeded {
                what: "MBR logical partitions",
                ..
            })
        ));
    }
}
