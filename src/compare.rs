//! Comparing the guest-visible contents of two images, with qemu-img
//! compare's rules: a size difference is only a difference in strict mode
//! or when the larger image's extra part holds non-zero bytes.

use rayon::prelude::*;
use v2x_formats::block::{is_zero, BlockSource, ExtentKind};
use v2x_formats::error::Result;

const CHUNK: u64 = 1 << 20;
const BATCH: usize = 32;

/// The outcome of a comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Same guest bytes.
    Identical,
    /// First differing guest byte.
    ContentMismatch(u64),
    /// Sizes differ (strict mode).
    SizeMismatch(u64, u64),
}

/// Which parts of `[start, start+len)` hold data in `src`, as (start, len) pairs.
fn data_ranges(src: &dyn BlockSource, start: u64, len: u64) -> Result<Vec<(u64, u64)>> {
    Ok(src
        .map(start, len)?
        .into_iter()
        .filter(|e| e.kind == ExtentKind::Data)
        .map(|e| (e.start, e.len))
        .collect())
}

/// Reads `[off, off+len)`, touching only the data ranges.
fn read_sparse(src: &dyn BlockSource, off: u64, len: u64) -> Result<Option<Vec<u8>>> {
    let ranges = data_ranges(src, off, len)?;
    if ranges.is_empty() {
        return Ok(None);
    }
    let mut buf = vec![0u8; len as usize];
    for (s, l) in ranges {
        let r = (s - off) as usize..(s - off + l) as usize;
        src.read_at(s, &mut buf[r])?;
    }
    Ok(Some(buf))
}

/// First offset in `[off, off+len)` where the two differ, if any.
fn compare_chunk(a: &dyn BlockSource, b: &dyn BlockSource, off: u64, len: u64) -> Result<Option<u64>> {
    let (x, y) = (read_sparse(a, off, len)?, read_sparse(b, off, len)?);
    let pos = match (&x, &y) {
        (None, None) => None,
        (Some(v), None) | (None, Some(v)) => v.iter().position(|c| *c != 0),
        (Some(v), Some(w)) => {
            if v == w {
                None
            } else {
                v.iter().zip(w).position(|(p, q)| p != q)
            }
        }
    };
    Ok(pos.map(|p| off + p as u64))
}

/// First non-zero byte of `src` in `[start, end)`.
fn first_nonzero(src: &dyn BlockSource, start: u64, end: u64) -> Result<Option<u64>> {
    let mut pos = start;
    while pos < end {
        let len = CHUNK.min(end - pos);
        if let Some(buf) = read_sparse(src, pos, len)? {
            if !is_zero(&buf) {
                return Ok(buf.iter().position(|c| *c != 0).map(|p| pos + p as u64));
            }
        }
        pos += len;
    }
    Ok(None)
}

/// Compares two images. `progress` receives the offset compared so far.
pub fn compare(
    a: &dyn BlockSource,
    b: &dyn BlockSource,
    strict: bool,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Verdict> {
    let (sa, sb) = (a.size(), b.size());
    if strict && sa != sb {
        return Ok(Verdict::SizeMismatch(sa, sb));
    }
    let common = sa.min(sb);
    let mut pos = 0;
    while pos < common {
        let chunks: Vec<(u64, u64)> = (0..BATCH as u64)
            .map(|i| pos + i * CHUNK)
            .take_while(|o| *o < common)
            .map(|o| (o, CHUNK.min(common - o)))
            .collect();
        let found: Result<Vec<Option<u64>>> = chunks
            .par_iter()
            .map(|&(o, l)| compare_chunk(a, b, o, l))
            .collect();
        if let Some(off) = found?.into_iter().flatten().min() {
            return Ok(Verdict::ContentMismatch(off));
        }
        pos = chunks.last().map(|c| c.0 + c.1).unwrap_or(common);
        progress(pos);
    }
    let (longer, end) = if sa > sb { (a, sa) } else { (b, sb) };
    if let Some(off) = first_nonzero(longer, common, end)? {
        return Ok(Verdict::ContentMismatch(off));
    }
    progress(end);
    Ok(Verdict::Identical)
}
