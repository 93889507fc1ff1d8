//! VHDX log replay into memory.
//!
//! A VHDX whose header names a log GUID may hold metadata writes that were
//! logged but not yet applied. We find the active log sequence (the valid
//! run of entries with the highest sequence number whose head names its
//! tail), check every entry's CRC-32C and every data sector's sequence
//! stamps, and apply the descriptors to an [`Overlay`] of file offsets. The
//! source file is never written; every later read goes through the overlay.

use crate::error::{check_limit, Error, Result};
use crate::file::HostFile;
use crate::vhd::runs::ReadAt;
use crate::vhdx::header::{crc32c_without, guid_at, le32, le64, Guid, Header};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Largest log we load into memory (Hyper-V and qemu use 1 MiB).
pub const MAX_LOG_LEN: u64 = 64 << 20;
/// How many candidate head entries we try before giving up on the log.
pub const MAX_LOG_HEADS_TRIED: usize = 16;
/// Largest file offset a replayed write may reach.
pub const MAX_REPLAY_FILE_OFFSET: u64 = 1 << 50;

const SECTOR: u64 = 4096;
const ENTRY_HEADER_LEN: usize = 64;
const DESCRIPTOR_LEN: usize = 32;

/// Bytes a replayed log puts over a range of the file.
#[derive(Debug, Clone)]
enum Content {
    /// The range reads as zero.
    Zero,
    /// The range reads from this buffer, starting at this index.
    Data(Arc<Vec<u8>>, usize),
}

/// Replayed writes by file offset: non-overlapping `[start, end)` patches.
#[derive(Debug, Default)]
pub struct Overlay {
    patches: BTreeMap<u64, (u64, Content)>,
}

impl Overlay {
    /// Puts `content` over `[start, end)`, trimming what it covers.
    fn apply(&mut self, start: u64, end: u64, content: Content) {
        let hit: Vec<u64> = self
            .patches
            .range(..end)
            .rev()
            .take_while(|(_, (e, _))| *e > start)
            .map(|(s, _)| *s)
            .collect();
        for s in hit {
            let Some((e, c)) = self.patches.remove(&s) else {
                continue;
            };
            if s < start {
                self.patches.insert(s, (start, c.clone()));
            }
            if e > end {
                let c = match c {
                    Content::Zero => Content::Zero,
                    Content::Data(v, i) => Content::Data(v, i + (end - s) as usize),
                };
                self.patches.insert(end, (e, c));
            }
        }
        self.patches.insert(start, (end, content));
    }

    /// End of the highest patch (0 when empty).
    fn end(&self) -> u64 {
        self.patches.values().map(|(e, _)| *e).max().unwrap_or(0)
    }
}

/// A host file seen through a replayed log. Without a log it is the file.
#[derive(Debug)]
pub struct LoggedFile {
    file: HostFile,
    overlay: Overlay,
    /// Length of the file after replay (the log may extend it).
    len: u64,
}

impl LoggedFile {
    /// The file as it is, with nothing replayed.
    pub fn new(file: HostFile) -> Self {
        let len = file.len();
        LoggedFile {
            file,
            overlay: Overlay::default(),
            len,
        }
    }

    /// The underlying host file.
    pub fn host(&self) -> &HostFile {
        &self.file
    }
}

impl ReadAt for LoggedFile {
    fn len(&self) -> u64 {
        self.len
    }

    /// Replayed log patches are in memory; the hint goes to the host file.
    fn prefetch(&self, offset: u64, len: u64) {
        self.file
            .prefetch(offset, len.min(self.len.saturating_sub(offset)));
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|e| *e <= self.len)
            .ok_or_else(|| {
                Error::corrupt(
                    format!(
                        "{} bytes at {offset:#x} lie past the end of {} ({} bytes after log replay)",
                        buf.len(),
                        self.file.path().display(),
                        self.len
                    ),
                    offset,
                )
            })?;
        if self.overlay.patches.is_empty() {
            return self.file.read_exact_at(offset, buf);
        }
        let first = self
            .overlay
            .patches
            .range(..=offset)
            .next_back()
            .filter(|(_, (e, _))| *e > offset)
            .map_or(offset, |(s, _)| *s);
        let mut pos = offset;
        for (&s, (e, c)) in self.overlay.patches.range(first..end) {
            if s > pos {
                let dst = &mut buf[(pos - offset) as usize..(s - offset) as usize];
                self.file.read_at_zero_fill(pos, dst)?;
                pos = s;
            }
            let seg_end = (*e).min(end);
            if seg_end <= pos {
                continue;
            }
            let dst = &mut buf[(pos - offset) as usize..(seg_end - offset) as usize];
            match c {
                Content::Zero => dst.fill(0),
                Content::Data(v, i) => {
                    let from = i + (pos - s) as usize;
                    dst.copy_from_slice(&v[from..from + dst.len()]);
                }
            }
            pos = seg_end;
        }
        if pos < end {
            self.file
                .read_at_zero_fill(pos, &mut buf[(pos - offset) as usize..])?;
        }
        Ok(())
    }
}

/// Header fields of one log entry.
#[derive(Debug, Clone, Copy)]
struct EntryHead {
    at: u64,
    len: u64,
    tail: u64,
    seq: u64,
    descriptors: u64,
    flushed_file_offset: u64,
    last_file_offset: u64,
}

/// `len` bytes of the circular log starting at `at`.
fn circular(log: &[u8], at: u64, len: u64) -> Vec<u8> {
    let (at, len) = (at as usize, len as usize);
    let first = (log.len() - at).min(len);
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&log[at..at + first]);
    v.extend_from_slice(&log[..len - first]);
    v
}

fn parse_entry_head(log: &[u8], at: u64, guid: &Guid) -> Option<EntryHead> {
    let b = &log[at as usize..at as usize + ENTRY_HEADER_LEN];
    let log_len = log.len() as u64;
    let e = EntryHead {
        at,
        len: u64::from(le32(b, 8)),
        tail: u64::from(le32(b, 12)),
        seq: le64(b, 16),
        descriptors: u64::from(le32(b, 24)),
        flushed_file_offset: le64(b, 48),
        last_file_offset: le64(b, 56),
    };
    let desc_bytes =
        (ENTRY_HEADER_LEN as u64 + DESCRIPTOR_LEN as u64 * e.descriptors).next_multiple_of(SECTOR);
    let ok = &b[..4] == b"loge"
        && guid_at(b, 32) == *guid
        && e.len >= SECTOR
        && e.len % SECTOR == 0
        && e.len <= log_len
        && e.tail % SECTOR == 0
        && e.tail < log_len
        && desc_bytes <= e.len;
    ok.then_some(e)
}

/// Finds the active sequence: entries from tail to head, in order.
fn active_sequence(log: &[u8], guid: &Guid) -> Vec<(EntryHead, Vec<u8>)> {
    let log_len = log.len() as u64;
    let heads: Vec<EntryHead> = (0..log_len / SECTOR)
        .filter_map(|i| parse_entry_head(log, i * SECTOR, guid))
        .collect();
    let by_at: HashMap<u64, EntryHead> = heads.iter().map(|e| (e.at, *e)).collect();
    let mut order: Vec<&EntryHead> = heads.iter().collect();
    order.sort_by_key(|e| std::cmp::Reverse(e.seq));
    let valid = |e: &EntryHead| -> Option<Vec<u8>> {
        let bytes = circular(log, e.at, e.len);
        (crc32c_without(&bytes, 4) == le32(&bytes, 4)).then_some(bytes)
    };
    'cand: for head in order.into_iter().take(MAX_LOG_HEADS_TRIED) {
        let mut seq: Vec<(EntryHead, Vec<u8>)> = Vec::new();
        let mut cur = head.tail;
        let mut walked = 0u64;
        loop {
            let Some(e) = by_at.get(&cur) else { continue 'cand };
            if let Some((prev, _)) = seq.last() {
                if prev.seq.checked_add(1) != Some(e.seq) {
                    continue 'cand;
                }
            }
            walked += e.len;
            if walked > log_len {
                continue 'cand;
            }
            let Some(bytes) = valid(e) else { continue 'cand };
            seq.push((*e, bytes));
            if e.at == head.at {
                return seq;
            }
            cur = (cur + e.len) % log_len;
        }
    }
    Vec::new()
}

/// Replays the log named by `hdr` into `file`'s overlay. Returns a note for
/// the user when the header named a log.
pub fn replay(file: &mut LoggedFile, hdr: &Header) -> Result<Option<String>> {
    if hdr.log_guid == [0; 16] {
        return Ok(None);
    }
    let log_len = u64::from(hdr.log_length);
    check_limit("VHDX log length", log_len, MAX_LOG_LEN)?;
    let field = crate::vhdx::header::HEADER1_AT + crate::vhdx::header::header_off::LOG_LENGTH as u64;
    if log_len < SECTOR || log_len % SECTOR != 0 {
        return Err(Error::corrupt(
            format!("VHDX log length {log_len} is not a multiple of 4 KiB"),
            field,
        ));
    }
    let log = file.file.read_table(hdr.log_offset, log_len, "VHDX log")?;
    let entries = active_sequence(&log, &hdr.log_guid);
    let Some((head, _)) = entries.last() else {
        return Ok(Some(
            "VHDX header names a log, but it holds no valid sequence; nothing replayed".into(),
        ));
    };
    let head = *head;
    if file.file.len() < head.flushed_file_offset {
        return Err(Error::corrupt(
            format!(
                "VHDX log says the file held {} bytes when flushed, but it has only {}: data was lost",
                head.flushed_file_offset,
                file.file.len()
            ),
            hdr.log_offset + head.at + 48,
        ));
    }
    let first_seq = entries[0].0.seq;
    for (e, bytes) in &entries {
        apply_entry(&mut file.overlay, e, bytes, hdr.log_offset)?;
    }
    file.len = file
        .len
        .max(head.last_file_offset.min(MAX_REPLAY_FILE_OFFSET))
        .max(file.overlay.end());
    Ok(Some(format!(
        "replayed {} VHDX log entries (sequence {first_seq}..{}) in memory; the file was not modified",
        entries.len(),
        head.seq
    )))
}

/// Applies the zero and data descriptors of one CRC-checked entry.
fn apply_entry(overlay: &mut Overlay, e: &EntryHead, bytes: &[u8], log_at: u64) -> Result<()> {
    let at = log_at + e.at;
    let mut data_sector = (ENTRY_HEADER_LEN as u64 + DESCRIPTOR_LEN as u64 * e.descriptors).div_ceil(SECTOR);
    for i in 0..e.descriptors as usize {
        let d = &bytes[ENTRY_HEADER_LEN + i * DESCRIPTOR_LEN..][..DESCRIPTOR_LEN];
        let file_off = le64(d, 16);
        if le64(d, 24) != e.seq {
            return Err(Error::corrupt(
                "VHDX log descriptor has the wrong sequence number",
                at,
            ));
        }
        let (len, content) = match &d[..4] {
            b"zero" => (le64(d, 8), Content::Zero),
            b"desc" => {
                let Some(s) =
                    bytes.get((data_sector * SECTOR) as usize..((data_sector + 1) * SECTOR) as usize)
                else {
                    return Err(Error::corrupt(
                        "VHDX log entry has fewer data sectors than descriptors",
                        at,
                    ));
                };
                data_sector += 1;
                if &s[..4] != b"data" || u64::from(le32(s, 4)) != e.seq >> 32 || le32(s, 4092) != e.seq as u32
                {
                    return Err(Error::corrupt(
                        "VHDX log data sector is torn (bad signature or sequence)",
                        at,
                    ));
                }
                let mut page = Vec::with_capacity(SECTOR as usize);
                page.extend_from_slice(&d[8..16]);
                page.extend_from_slice(&s[8..4092]);
                page.extend_from_slice(&d[4..8]);
                (SECTOR, Content::Data(Arc::new(page), 0))
            }
            _ => return Err(Error::corrupt("unknown VHDX log descriptor", at)),
        };
        let end = file_off.checked_add(len).filter(|e| *e <= MAX_REPLAY_FILE_OFFSET);
        match end {
            Some(end) if file_off % SECTOR == 0 && len % SECTOR == 0 && len > 0 => {
                overlay.apply(file_off, end, content)
            }
            _ => {
                return Err(Error::corrupt(
                    "VHDX log descriptor range is misaligned or too large",
                    at,
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_patches_split_and_override() {
        let mut o = Overlay::default();
        o.apply(0, 4 * SECTOR, Content::Zero);
        o.apply(SECTOR, 2 * SECTOR, Content::Data(Arc::new(vec![7; 4096]), 0));
        o.apply(3 * SECTOR, 5 * SECTOR, Content::Data(Arc::new(vec![8; 8192]), 0));
        o.apply(4 * SECTOR, 5 * SECTOR, Content::Zero);
        let f = LoggedFile {
            file: HostFile::from_bytes("x", vec![1; 6 * 4096]),
            overlay: o,
            len: 6 * 4096,
        };
        let mut b = vec![9u8; 6 * 4096];
        f.read_exact_at(0, &mut b).unwrap();
        let at = |s: usize| b[s * 4096];
        assert_eq!([at(0), at(1), at(2), at(3), at(4), at(5)], [0, 7, 0, 8, 0, 1]);
        let mut b = vec![9u8; 100];
        f.read_exact_at(SECTOR + 4000, &mut b).unwrap();
        assert_eq!(&b[..96], &[7; 96][..]);
        assert_eq!(&b[96..], &[0; 4][..]);
    }
}
