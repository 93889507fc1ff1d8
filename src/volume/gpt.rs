//! GUID partition tables: a primary header at LBA 1 and a backup at the last
//! LBA, each with a CRC32 over itself and over its partition-entry array.
//! When the primary copy is damaged the backup is used and a warning added;
//! when both are damaged the error names both problems.

use super::{le16, le32, le64, read_vec, PartEntry, Table};
use v2x_formats::block::BlockSource;
use v2x_formats::error::{check_limit, mul};
use v2x_formats::{Error, Result};

/// Most partition entries a GPT header may declare (tools write 128).
pub const MAX_GPT_ENTRIES: u64 = 4096;

/// Largest partition entry size accepted (the spec's entries are 128 bytes).
pub const MAX_GPT_ENTRY_SIZE: u64 = 4096;

/// Largest partition-entry array read, in bytes.
pub const MAX_GPT_ARRAY_BYTES: u64 = 4 << 20;

/// The header's signature.
const SIGNATURE: &[u8; 8] = b"EFI PART";

/// Attribute bit: legacy BIOS bootable.
const LEGACY_BIOS_BOOTABLE: u64 = 1 << 2;

/// The fields of a header that passed its checks.
#[derive(Debug, Clone, Copy)]
struct Header {
    entries_lba: u64,
    num_entries: u64,
    entry_size: u64,
    array_crc: u32,
}

/// True when a GPT header signature sits at LBA 1 for 512- or 4096-byte sectors.
pub fn has_signature(disk: &dyn BlockSource) -> Result<bool> {
    Ok(sector_size(disk)?.is_some())
}

/// The sector size whose LBA 1 or last LBA holds a GPT signature.
fn sector_size(disk: &dyn BlockSource) -> Result<Option<u64>> {
    for ss in [512u64, 4096] {
        for off in [ss, disk.size().saturating_sub(ss)] {
            if off >= ss && off.checked_add(8).is_some_and(|e| e <= disk.size()) {
                let mut sig = [0u8; 8];
                disk.read_at(off, &mut sig)?;
                if &sig == SIGNATURE {
                    return Ok(Some(ss));
                }
            }
        }
    }
    Ok(None)
}

/// Reads the GPT of `disk`, falling back to the backup header and array when
/// the primary ones fail their checks.
pub fn read(disk: &dyn BlockSource) -> Result<Table> {
    let Some(ss) = sector_size(disk)? else {
        return Err(Error::corrupt(
            "protective MBR but no GPT header at LBA 1 or at the last LBA",
            512,
        ));
    };
    let last_lba = disk.size() / ss - 1;
    let primary = load(disk, ss, 1, "primary");
    let (entries, warnings) = match primary {
        Ok(entries) => (entries, Vec::new()),
        Err(Error::Corrupt { what, offset }) => match load(disk, ss, last_lba, "backup") {
            Ok(entries) => (
                entries,
                vec![format!(
                    "primary GPT is damaged ({what} at byte {offset:#x}); the backup GPT was used"
                )],
            ),
            Err(Error::Corrupt { what: w2, offset: o2 }) => {
                return Err(Error::corrupt(
                    format!("both GPT copies are damaged: primary {what}; backup {w2} (at byte {o2:#x})"),
                    offset,
                ))
            }
            Err(e) => return Err(e),
        },
        Err(e) => return Err(e),
    };
    Ok(Table {
        scheme: "gpt",
        sector_size: ss,
        entries,
        warnings,
    })
}

/// Reads and checks the header at `lba` and its entry array.
fn load(disk: &dyn BlockSource, ss: u64, lba: u64, which: &str) -> Result<Vec<PartEntry>> {
    let at = lba * ss;
    let h = header(disk, ss, lba, which)?;
    let array_at = mul(h.entries_lba, ss, "GPT partition array offset", at + 72)?;
    // Bounded: both factors were capped by `header`.
    let bytes = h.num_entries * h.entry_size;
    check_limit("GPT partition array bytes", bytes, MAX_GPT_ARRAY_BYTES)?;
    let array = read_vec(
        disk,
        array_at,
        bytes as usize,
        &format!("GPT {which} partition array"),
    )?;
    let crc = crc32fast::hash(&array);
    if crc != h.array_crc {
        return Err(Error::corrupt(
            format!(
                "GPT {which} partition array CRC32 mismatch (stored {:#010x}, computed {crc:#010x})",
                h.array_crc
            ),
            array_at,
        ));
    }
    let mut out = Vec::new();
    for i in 0..h.num_entries as usize {
        let e = &array[i * h.entry_size as usize..(i + 1) * h.entry_size as usize];
        let type_guid = &e[..16];
        if type_guid.iter().all(|b| *b == 0) {
            continue;
        }
        let entry_at = array_at + (i as u64) * h.entry_size;
        let (first, last) = (le64(e, 32), le64(e, 40));
        let span = last
            .checked_sub(first)
            .and_then(|n| n.checked_add(1))
            .and_then(|n| n.checked_mul(ss))
            .zip(first.checked_mul(ss));
        let Some((len, start)) =
            span.filter(|(l, s)| s.checked_add(*l).is_some_and(|end| end <= disk.size()))
        else {
            return Err(Error::corrupt(
                format!(
                    "GPT {which} entry {}: LBAs {first}..={last} do not fit the {}-byte disk",
                    i + 1,
                    disk.size()
                ),
                entry_at + 32,
            ));
        };
        let name: Vec<u16> = (0..36)
            .map(|k| le16(e, 56 + 2 * k))
            .take_while(|c| *c != 0)
            .collect();
        out.push(PartEntry {
            number: i as u32 + 1,
            start,
            len,
            type_id: guid(type_guid),
            part_uuid: Some(guid(&e[16..32])),
            part_label: Some(String::from_utf16_lossy(&name)),
            bootable: le64(e, 48) & LEGACY_BIOS_BOOTABLE != 0,
        });
    }
    Ok(out)
}

/// Reads and checks one header: signature, size, CRC32, own LBA, entry caps.
fn header(disk: &dyn BlockSource, ss: u64, lba: u64, which: &str) -> Result<Header> {
    let at = lba * ss;
    let b = read_vec(disk, at, ss as usize, &format!("GPT {which} header"))?;
    if &b[..8] != SIGNATURE {
        return Err(Error::corrupt(
            format!("GPT {which} header signature missing"),
            at,
        ));
    }
    let size = le32(&b, 12) as u64;
    if !(92..=ss).contains(&size) {
        return Err(Error::corrupt(
            format!("GPT {which} header size {size} is not between 92 and {ss}"),
            at + 12,
        ));
    }
    let stored = le32(&b, 16);
    let mut copy = b[..size as usize].to_vec();
    copy[16..20].fill(0);
    let crc = crc32fast::hash(&copy);
    if crc != stored {
        return Err(Error::corrupt(
            format!("GPT {which} header CRC32 mismatch (stored {stored:#010x}, computed {crc:#010x})"),
            at + 16,
        ));
    }
    if le64(&b, 24) != lba {
        return Err(Error::corrupt(
            format!(
                "GPT {which} header says it lives at LBA {}, not {lba}",
                le64(&b, 24)
            ),
            at + 24,
        ));
    }
    let num_entries = le32(&b, 80) as u64;
    let entry_size = le32(&b, 84) as u64;
    check_limit("GPT partition entries", num_entries, MAX_GPT_ENTRIES)?;
    check_limit("GPT partition entry size", entry_size, MAX_GPT_ENTRY_SIZE)?;
    if entry_size < 128 || !entry_size.is_power_of_two() {
        return Err(Error::corrupt(
            format!("GPT {which} partition entry size {entry_size} is not 128 times a power of two"),
            at + 84,
        ));
    }
    Ok(Header {
        entries_lba: le64(&b, 72),
        num_entries,
        entry_size,
        array_crc: le32(&b, 88),
    })
}

/// Formats a GUID as the spec prints it: the first three fields are stored
/// little-endian, the last two big-endian.
pub fn guid(b: &[u8]) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        le32(b, 0),
        le16(b, 4),
        le16(b, 6),
        b[8],
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_uses_mixed_endian_layout() {
        // The EFI system partition type as stored on disk.
        let esp = [
            0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b,
        ];
        assert_eq!(guid(&esp), "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
    }
}
