//! A copy-on-write layer over a source disk: guest edits land here, never in
//! the source. Edited blocks live in memory until [`MAX_MEMORY`] bytes, then
//! spill to an anonymous temporary file. The copier reads the overlay like
//! any other [`BlockSource`], so the edited image is produced in the same
//! single parallel pass as an unedited one.

use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
use std::sync::{Arc, RwLock};
use v2x_formats::block::{check_range, BlockSource, Extent, ExtentKind, ExtentList, ImageInfo};
use v2x_formats::{Error, Result};

/// Granularity of the overlay: edits are tracked in blocks of this size.
pub const BLOCK: u64 = 4096;

/// Edited bytes kept in memory before spilling to a temporary file.
pub const MAX_MEMORY: usize = 64 << 20;

/// Where one edited block's bytes are.
enum Slot {
    Mem(Box<[u8]>),
    /// Byte offset in the spill file.
    Spilled(u64),
}

struct State {
    blocks: BTreeMap<u64, Slot>,
    in_memory: usize,
    spill: Option<(std::fs::File, u64)>,
}

/// A source plus in-memory (and spilled) edits.
pub struct Overlay {
    base: Arc<dyn BlockSource>,
    state: RwLock<State>,
    max_memory: usize,
}

impl Overlay {
    /// An overlay with no edits over `base`.
    pub fn new(base: Arc<dyn BlockSource>) -> Self {
        Self::with_memory_limit(base, MAX_MEMORY)
    }

    /// As [`Overlay::new`], spilling to disk past `max_memory` bytes of edits.
    pub fn with_memory_limit(base: Arc<dyn BlockSource>, max_memory: usize) -> Self {
        Self {
            base,
            state: RwLock::new(State {
                blocks: BTreeMap::new(),
                in_memory: 0,
                spill: None,
            }),
            max_memory,
        }
    }

    /// Number of edited blocks.
    pub fn edited_blocks(&self) -> usize {
        self.state.read().expect("overlay lock").blocks.len()
    }

    /// Guest byte ranges that differ from the source, merged: `(start, len)`.
    pub fn edited_ranges(&self) -> Vec<(u64, u64)> {
        let st = self.state.read().expect("overlay lock");
        let mut out: Vec<(u64, u64)> = Vec::new();
        for &b in st.blocks.keys() {
            let start = b * BLOCK;
            let len = BLOCK.min(self.base.size() - start);
            match out.last_mut() {
                Some(last) if last.0 + last.1 == start => last.1 += len,
                _ => out.push((start, len)),
            }
        }
        out
    }

    /// Writes `data` at guest byte `offset`.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        check_range(self.size(), offset, data.len() as u64)?;
        let mut pos = 0usize;
        while pos < data.len() {
            let off = offset + pos as u64;
            let block = off / BLOCK;
            let in_block = (off % BLOCK) as usize;
            let n = (BLOCK as usize - in_block).min(data.len() - pos);
            // A whole block needs no read of what it replaces.
            let mut buf = if n == BLOCK as usize {
                vec![0u8; BLOCK as usize]
            } else {
                self.read_block(block)?
            };
            buf[in_block..in_block + n].copy_from_slice(&data[pos..pos + n]);
            self.store_block(block, buf)?;
            pos += n;
        }
        Ok(())
    }

    /// The current content of one block (edited or from the source).
    fn read_block(&self, block: u64) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; BLOCK as usize];
        let start = block * BLOCK;
        let len = BLOCK.min(self.size() - start) as usize;
        self.read_at(start, &mut buf[..len])?;
        Ok(buf)
    }

    fn store_block(&self, block: u64, data: Vec<u8>) -> Result<()> {
        let mut st = self.state.write().expect("overlay lock");
        let spilled_at = match st.blocks.get(&block) {
            Some(Slot::Spilled(at)) => Some(*at),
            _ => None,
        };
        if let Some(at) = spilled_at {
            let (file, _) = st.spill.as_mut().expect("spilled block without spill file");
            write_file_at(file, at, &data)?;
            return Ok(());
        }
        let was_mem = matches!(st.blocks.get(&block), Some(Slot::Mem(_)));
        if was_mem || st.in_memory + data.len() <= self.max_memory {
            if !was_mem {
                st.in_memory += data.len();
            }
            st.blocks.insert(block, Slot::Mem(data.into_boxed_slice()));
            return Ok(());
        }
        if st.spill.is_none() {
            let f = tempfile::tempfile().map_err(|e| Error::io("creating the overlay spill file", e))?;
            st.spill = Some((f, 0));
        }
        let (file, end) = st.spill.as_mut().expect("spill file");
        let at = *end;
        write_file_at(file, at, &data)?;
        *end += BLOCK;
        st.blocks.insert(block, Slot::Spilled(at));
        Ok(())
    }
}

fn write_file_at(file: &mut std::fs::File, at: u64, data: &[u8]) -> Result<()> {
    file.seek(SeekFrom::Start(at))
        .and_then(|_| file.write_all(data))
        .map_err(|e| Error::io("writing the overlay spill file", e))
}

fn read_file_at(file: &std::fs::File, at: u64, buf: &mut [u8]) -> Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(buf, at)
        .map_err(|e| Error::io("reading the overlay spill file", e))
}

impl BlockSource for Overlay {
    fn size(&self) -> u64 {
        self.base.size()
    }

    /// Edited blocks are in memory or the spill file; the hint goes to the base.
    fn prefetch(&self, offset: u64, len: u64) {
        self.base.prefetch(offset, len);
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(self.size(), offset, buf.len() as u64)?;
        if buf.is_empty() {
            return Ok(());
        }
        let st = self.state.read().expect("overlay lock");
        let end = offset + buf.len() as u64;
        let first = offset / BLOCK;
        let last = (end - 1) / BLOCK;
        let edited: Vec<(u64, &Slot)> = st.blocks.range(first..=last).map(|(k, v)| (*k, v)).collect();
        if edited.is_empty() {
            drop(st);
            return self.base.read_at(offset, buf);
        }
        // Read the source runs between edited blocks, then the edited blocks.
        let mut pos = offset;
        for (b, slot) in edited {
            let bstart = b * BLOCK;
            let bend = (bstart + BLOCK).min(self.size());
            if pos < bstart.max(offset) {
                let s = pos;
                let e = bstart.max(offset);
                self.base
                    .read_at(s, &mut buf[(s - offset) as usize..(e - offset) as usize])?;
            }
            let s = bstart.max(offset);
            let e = bend.min(end);
            let dst = &mut buf[(s - offset) as usize..(e - offset) as usize];
            let within = (s - bstart) as usize;
            match slot {
                Slot::Mem(data) => dst.copy_from_slice(&data[within..within + dst.len()]),
                Slot::Spilled(at) => {
                    let (file, _) = st.spill.as_ref().expect("spill file");
                    read_file_at(file, at + within as u64, dst)?;
                }
            }
            pos = e;
        }
        if pos < end {
            self.base.read_at(pos, &mut buf[(pos - offset) as usize..])?;
        }
        Ok(())
    }

    fn map(&self, start: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(self.size(), start, len)?;
        let base = self.base.map(start, len)?;
        let st = self.state.read().expect("overlay lock");
        if len == 0 || st.blocks.is_empty() {
            return Ok(base);
        }
        let end = start + len;
        let edited: Vec<(u64, u64)> = st
            .blocks
            .range(start / BLOCK..=(end - 1) / BLOCK)
            .map(|(b, _)| ((b * BLOCK).max(start), ((b + 1) * BLOCK).min(end)))
            .collect();
        let mut out = ExtentList::new();
        let mut ei = 0;
        for e in base {
            let mut pos = e.start;
            while pos < e.end() {
                while ei < edited.len() && edited[ei].1 <= pos {
                    ei += 1;
                }
                match edited.get(ei) {
                    Some(&(s, t)) if s <= pos => {
                        let stop = t.min(e.end());
                        out.push(pos, stop - pos, ExtentKind::Data, 0);
                        pos = stop;
                    }
                    Some(&(s, _)) if s < e.end() => {
                        out.push(pos, s - pos, e.kind, e.layer);
                        pos = s;
                    }
                    _ => {
                        out.push(pos, e.end() - pos, e.kind, e.layer);
                        pos = e.end();
                    }
                }
            }
        }
        Ok(out.into_vec())
    }

    fn info(&self) -> ImageInfo {
        self.base.info()
    }

    fn write_through(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.write_at(offset, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source of `size` bytes where byte i reads as (i / 512) as u8, with
    /// the second half unallocated (zeros).
    struct Pattern(u64);
    impl BlockSource for Pattern {
        fn size(&self) -> u64 {
            self.0
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
            for (i, b) in buf.iter_mut().enumerate() {
                let p = offset + i as u64;
                *b = if p < self.0 / 2 { (p / 512) as u8 | 1 } else { 0 };
            }
            Ok(())
        }
        fn map(&self, start: u64, len: u64) -> Result<Vec<Extent>> {
            let mut l = ExtentList::new();
            let half = self.0 / 2;
            let end = start + len;
            if start < half {
                l.push(start, half.min(end) - start, ExtentKind::Data, 0);
            }
            if end > half {
                let s = start.max(half);
                l.push(s, end - s, ExtentKind::Unallocated, 0);
            }
            Ok(l.into_vec())
        }
        fn info(&self) -> ImageInfo {
            ImageInfo::default()
        }
    }

    fn check_against_model(limit: usize) {
        let size = 1 << 20;
        let ov = Overlay::with_memory_limit(Arc::new(Pattern(size)), limit);
        let mut model = vec![0u8; size as usize];
        Pattern(size).read_at(0, &mut model).unwrap();
        // Edits crossing block boundaries, in both halves, overwriting each other.
        let edits: &[(u64, usize, u8)] = &[
            (100, 10, 0xaa),
            (4090, 20, 0xbb),
            (700_000, 9000, 0xcc),
            (4095, 2, 0xdd),
            (1_048_000, 576, 0xee),
        ];
        for &(off, len, v) in edits {
            ov.write_at(off, &vec![v; len]).unwrap();
            model[off as usize..off as usize + len].fill(v);
        }
        let mut got = vec![0u8; size as usize];
        ov.read_at(0, &mut got).unwrap();
        assert!(got == model);
        // Unaligned reads.
        for &(off, len) in &[(4000u64, 200usize), (699_999, 9100), (1_048_570, 6)] {
            let mut b = vec![0u8; len];
            ov.read_at(off, &mut b).unwrap();
            assert_eq!(b, model[off as usize..off as usize + len]);
        }
        // The map covers everything, and every edited block is Data.
        let map = ov.map(0, size).unwrap();
        assert_eq!(map.first().unwrap().start, 0);
        assert_eq!(map.last().unwrap().end(), size);
        for w in map.windows(2) {
            assert_eq!(w[0].end(), w[1].start);
        }
        for (s, l) in ov.edited_ranges() {
            for e in &map {
                if e.start < s + l && s < e.end() {
                    assert_eq!(e.kind, ExtentKind::Data, "{e:?} overlaps edit {s}+{l}");
                }
            }
        }
        assert_eq!(ov.edited_ranges()[0], (0, 8192));
    }

    #[test]
    fn edits_read_back_in_memory() {
        check_against_model(MAX_MEMORY);
    }

    #[test]
    fn edits_read_back_when_spilled() {
        check_against_model(2 * BLOCK as usize);
    }

    #[test]
    fn writes_past_the_end_are_refused() {
        let ov = Overlay::new(Arc::new(Pattern(8192)));
        assert!(ov.write_at(8190, &[1, 2, 3]).is_err());
    }
}
