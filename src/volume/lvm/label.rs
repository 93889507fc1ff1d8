//! The binary parts of an LVM2 physical volume: the label ("LABELONE" in
//! one of the first four 512-byte sectors), the PV header that follows it
//! (PV UUID, device size, data and metadata area lists), and the metadata
//! area header whose raw locations point at the text metadata in a circular
//! buffer.

use crate::volume::{le32, le64, read_vec};
use v2x_formats::block::BlockSource;
use v2x_formats::error::{add, check_limit};
use v2x_formats::{Error, Result};

/// LVM's sector unit for every on-disk offset, whatever the device's.
pub const SECTOR: u64 = 512;

/// Largest metadata text read from one metadata area.
pub const MAX_LVM_METADATA: u64 = 16 << 20;

/// Label signature.
const LABEL_ID: &[u8; 8] = b"LABELONE";
/// Label type of LVM2 text-format PVs.
const LABEL_TYPE: &[u8; 8] = b"LVM2 001";
/// Magic of a metadata area header.
const MDA_MAGIC: &[u8; 16] = b" LVM2 x[5A%r0N*>";
/// Seed of LVM's CRC32 (no final inversion).
const INITIAL_CRC: u32 = 0xf597_a6cf;
/// Raw location flag: this metadata copy is ignored.
const RAW_LOCN_IGNORED: u32 = 1;

/// A PV's label and header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvLabel {
    /// PV UUID, dashed as LVM prints it.
    pub uuid: String,
    /// Device size recorded by pvcreate, in bytes.
    pub dev_size: u64,
    /// Data areas as (byte offset, byte size); size 0 means "to the end".
    pub data_areas: Vec<(u64, u64)>,
    /// Metadata areas as (byte offset, byte size).
    pub metadata_areas: Vec<(u64, u64)>,
}

/// LVM's CRC32: the usual polynomial, seeded with 0xf597a6cf, not inverted.
pub fn lvm_crc(data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(!INITIAL_CRC);
    h.update(data);
    !h.finalize()
}

/// The PV UUID when `src` carries a valid LVM2 label; a damaged label is
/// ignored here, as LVM does (the assembly step reports it).
pub fn pv_uuid(src: &dyn BlockSource) -> Result<Option<String>> {
    match read_label(src) {
        Ok(l) => Ok(l.map(|l| l.uuid)),
        Err(Error::Corrupt { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Finds and parses the LVM2 label in the first four sectors of `src`.
pub fn read_label(src: &dyn BlockSource) -> Result<Option<PvLabel>> {
    for i in 0..4u64 {
        let off = i * SECTOR;
        if off + SECTOR > src.size() {
            break;
        }
        let s = read_vec(src, off, SECTOR as usize, "LVM label sector")?;
        if &s[..8] != LABEL_ID {
            continue;
        }
        if le64(&s, 8) != i {
            continue; // A label copied from elsewhere: LVM skips it too.
        }
        let crc = lvm_crc(&s[20..]);
        if crc != le32(&s, 16) {
            return Err(Error::corrupt(
                format!(
                    "LVM label CRC mismatch (stored {:#010x}, computed {crc:#010x})",
                    le32(&s, 16)
                ),
                off + 16,
            ));
        }
        if &s[24..32] != LABEL_TYPE {
            return Ok(None);
        }
        return parse_pv_header(&s, off).map(Some);
    }
    Ok(None)
}

/// The PV header inside the label sector `s` (found at byte `off`).
fn parse_pv_header(s: &[u8], off: u64) -> Result<PvLabel> {
    let start = le32(s, 20) as usize;
    if !(32..=SECTOR as usize - 40).contains(&start) {
        return Err(Error::corrupt(
            format!("LVM PV header offset {start} lies outside the label sector"),
            off + 20,
        ));
    }
    let uuid_raw = &s[start..start + 32];
    if !uuid_raw.iter().all(|c| c.is_ascii_alphanumeric()) {
        return Err(Error::corrupt(
            "LVM PV UUID is not alphanumeric",
            off + start as u64,
        ));
    }
    let mut label = PvLabel {
        uuid: dashed_id(uuid_raw),
        dev_size: le64(s, start + 32),
        data_areas: Vec::new(),
        metadata_areas: Vec::new(),
    };
    // Two zero-terminated lists of (offset, size); the sector bounds them.
    let mut pos = start + 40;
    for list in [&mut label.data_areas, &mut label.metadata_areas] {
        loop {
            if pos + 16 > s.len() {
                return Err(Error::corrupt(
                    "LVM PV header area list runs past the label sector",
                    off + pos as u64,
                ));
            }
            let (o, n) = (le64(s, pos), le64(s, pos + 8));
            pos += 16;
            if o == 0 {
                break;
            }
            list.push((o, n));
        }
    }
    Ok(label)
}

/// An LVM ID (32 characters) dashed 6-4-4-4-4-4-6 as LVM prints it.
pub fn dashed_id(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    let mut out = String::new();
    let mut at = 0;
    for (i, n) in [6usize, 4, 4, 4, 4, 4, 6].into_iter().enumerate() {
        if i > 0 {
            out.push('-');
        }
        out.push_str(s.get(at..at + n).unwrap_or(""));
        at += n;
    }
    out
}

/// Reads the current metadata text of the metadata area at `(start, size)`
/// (byte offset and size on the PV). Returns the text (trailing NULs cut) and
/// its byte offset on the PV, or None when the area holds no metadata or
/// marks it ignored.
pub fn read_metadata(src: &dyn BlockSource, area: (u64, u64)) -> Result<Option<(Vec<u8>, u64)>> {
    let (start, size) = area;
    let h = read_vec(src, start, SECTOR as usize, "LVM metadata area header")?;
    let crc = lvm_crc(&h[4..]);
    if crc != le32(&h, 0) {
        return Err(Error::corrupt(
            format!(
                "LVM metadata area header checksum mismatch (stored {:#010x}, computed {crc:#010x})",
                le32(&h, 0)
            ),
            start,
        ));
    }
    if &h[4..20] != MDA_MAGIC {
        return Err(Error::corrupt(
            "LVM metadata area header magic missing",
            start + 4,
        ));
    }
    if le32(&h, 20) != 1 {
        return Err(Error::unsupported(format!(
            "LVM metadata area header version {}",
            le32(&h, 20)
        )));
    }
    if le64(&h, 24) != start {
        return Err(Error::corrupt(
            format!(
                "LVM metadata area header says it starts at {:#x}, not {start:#x}",
                le64(&h, 24)
            ),
            start + 24,
        ));
    }
    let mda_size = le64(&h, 32);
    if mda_size <= SECTOR || (size != 0 && mda_size > size) {
        return Err(Error::corrupt(
            format!("LVM metadata area size {mda_size} does not fit the area of {size} bytes"),
            start + 32,
        ));
    }
    // The first raw location is the committed metadata.
    let (off, len, text_crc, flags) = (le64(&h, 40), le64(&h, 48), le32(&h, 56), le32(&h, 60));
    if off == 0 || len == 0 || flags & RAW_LOCN_IGNORED != 0 {
        return Ok(None);
    }
    check_limit("LVM metadata text bytes", len, MAX_LVM_METADATA)?;
    if off < SECTOR || off >= mda_size || len > mda_size - SECTOR {
        return Err(Error::corrupt(
            format!("LVM metadata location {off:#x}+{len:#x} lies outside the {mda_size}-byte area"),
            start + 40,
        ));
    }
    // The buffer is circular: text running past the end wraps to just after the header.
    let first = len.min(mda_size - off);
    let text_at = add(start, off, "LVM metadata offset", start + 40)?;
    let mut text = read_vec(src, text_at, first as usize, "LVM metadata text")?;
    if first < len {
        let rest = read_vec(
            src,
            start + SECTOR,
            (len - first) as usize,
            "LVM metadata text (wrapped)",
        )?;
        text.extend_from_slice(&rest);
    }
    let crc = lvm_crc(&text);
    if crc != text_crc {
        return Err(Error::corrupt(
            format!("LVM metadata text checksum mismatch (stored {text_crc:#010x}, computed {crc:#010x})"),
            text_at,
        ));
    }
    while text.last() == Some(&0) {
        text.pop();
    }
    Ok(Some((text, text_at)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use v2x_formats::file::HostFile;
    use v2x_formats::raw::RawImage;

    fn src(bytes: Vec<u8>) -> RawImage {
        RawImage::new(HostFile::from_bytes("t", bytes)).unwrap()
    }

    /// A metadata area at 4096 of `mda` bytes holding `text` at `off`.
    fn area(text: &[u8], off: u64, mda: u64) -> Vec<u8> {
        let start = 4096u64;
        let mut d = vec![0u8; (start + mda) as usize];
        let h = start as usize;
        d[h + 4..h + 20].copy_from_slice(MDA_MAGIC);
        d[h + 20..h + 24].copy_from_slice(&1u32.to_le_bytes());
        d[h + 24..h + 32].copy_from_slice(&start.to_le_bytes());
        d[h + 32..h + 40].copy_from_slice(&mda.to_le_bytes());
        d[h + 40..h + 48].copy_from_slice(&off.to_le_bytes());
        d[h + 48..h + 56].copy_from_slice(&(text.len() as u64).to_le_bytes());
        d[h + 56..h + 60].copy_from_slice(&lvm_crc(text).to_le_bytes());
        for (i, b) in text.iter().enumerate() {
            let mut p = off + i as u64;
            if p >= mda {
                p = p - mda + SECTOR;
            }
            d[h + p as usize] = *b;
        }
        let crc = lvm_crc(&d[h + 4..h + 512]);
        d[h..h + 4].copy_from_slice(&crc.to_le_bytes());
        d
    }

    #[test]
    fn metadata_wrapping_round_the_circular_buffer_is_joined() {
        let text = b"vg { seqno = 7 }\n".repeat(20);
        let mda = 2048u64;
        let d = area(&text, mda - 100, mda);
        let (got, at) = read_metadata(&src(d), (4096, mda)).unwrap().unwrap();
        assert_eq!(got, text);
        assert_eq!(at, 4096 + mda - 100);
    }

    #[test]
    fn metadata_checksum_and_size_are_checked() {
        let text = b"vg { }".to_vec();
        let mut d = area(&text, 512, 4096);
        d[4096 + 512] = b'x';
        assert!(matches!(
            read_metadata(&src(d), (4096, 4096)),
            Err(Error::Corrupt { offset: 4608, .. })
        ));
        let mut d = area(&text, 512, 4096);
        d[4096 + 48..4096 + 56].copy_from_slice(&(MAX_LVM_METADATA + 1).to_le_bytes());
        let crc = lvm_crc(&d[4096 + 4..4096 + 512]);
        d[4096..4100].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            read_metadata(&src(d), (4096, 4096)),
            Err(Error::LimitExceeded { .. })
        ));
    }

    #[test]
    fn ids_are_dashed_like_lvm() {
        assert_eq!(
            dashed_id(b"S6xcBmoEGJfp1NHauutExrnp5YTYLXZm"),
            "S6xcBm-oEGJ-fp1N-Hauu-tExr-np5Y-TYLXZm"
        );
    }
}
