//! LZO1X decompression and btrfs's segmented LZO framing: a LE32 total
//! length, then per-sector segments (LE32 length + LZO1X stream), where a
//! segment header never straddles a sector boundary (up to 3 zero bytes pad it).

use super::sb::le32;
use v2x_formats::{Error, Result};

/// Decompresses one btrfs LZO extent into at most `max_out` bytes.
pub fn decompress_btrfs(input: &[u8], max_out: usize, sector: usize, at: u64) -> Result<Vec<u8>> {
    let corrupt =
        |what: &str, pos: usize| Error::corrupt(format!("btrfs LZO extent: {what}"), at + pos as u64);
    if input.len() < 4 {
        return Err(corrupt("shorter than its header", 0));
    }
    let total = le32(input, 0) as usize;
    if total < 4 || total > input.len() {
        return Err(corrupt("total length does not fit the extent", 0));
    }
    let mut out = Vec::with_capacity(max_out);
    let mut pos = 4usize;
    while pos < total && out.len() < max_out {
        let left_in_sector = sector - pos % sector;
        if left_in_sector < 4 {
            pos += left_in_sector;
            continue;
        }
        if pos + 4 > total {
            return Err(corrupt("segment header truncated", pos));
        }
        let seg_len = le32(input, pos) as usize;
        let start = pos + 4;
        let Some(seg) = input
            .get(start..start.saturating_add(seg_len))
            .filter(|_| start + seg_len <= total)
        else {
            return Err(corrupt("segment runs past the total length", pos));
        };
        let limit = sector.min(max_out - out.len());
        lzo1x_decompress(seg, &mut out, limit).map_err(|what| corrupt(what, start))?;
        pos = start + seg_len;
    }
    Ok(out)
}

/// Decompresses one LZO1X stream, appending at most `limit` bytes to `out`.
/// Matches may reach back into bytes already in `out` only from this stream.
pub fn lzo1x_decompress(
    input: &[u8],
    out: &mut Vec<u8>,
    limit: usize,
) -> std::result::Result<(), &'static str> {
    let base = out.len();
    let cap = base + limit;
    let mut ip = 0usize;
    let byte = |ip: &mut usize| -> std::result::Result<usize, &'static str> {
        let b = *input.get(*ip).ok_or("input ends inside an instruction")?;
        *ip += 1;
        Ok(b as usize)
    };
    // Reads a run length extension: zero bytes add 255 each, then one non-zero byte.
    let extend = |ip: &mut usize, add: usize| -> std::result::Result<usize, &'static str> {
        let mut n = add;
        loop {
            let b = *input.get(*ip).ok_or("input ends inside a length")?;
            *ip += 1;
            if b != 0 {
                return Ok(n + b as usize);
            }
            n += 255;
            if n > (1 << 20) {
                return Err("run length is absurd");
            }
        }
    };
    let literals = |ip: &mut usize, out: &mut Vec<u8>, n: usize| -> std::result::Result<(), &'static str> {
        let src = input.get(*ip..*ip + n).ok_or("literal run overruns the input")?;
        if out.len() + n > cap {
            return Err("output exceeds its size");
        }
        out.extend_from_slice(src);
        *ip += n;
        Ok(())
    };
    let copy_match = |out: &mut Vec<u8>, dist: usize, len: usize| -> std::result::Result<(), &'static str> {
        if dist == 0 || dist > out.len() - base {
            return Err("match reaches before the start of the output");
        }
        if out.len() + len > cap {
            return Err("output exceeds its size");
        }
        let from = out.len() - dist;
        for i in 0..len {
            let b = out[from + i];
            out.push(b);
        }
        Ok(())
    };

    let mut state;
    let first = *input.first().ok_or("empty stream")? as usize;
    if first > 17 {
        ip = 1;
        let n = first - 17;
        literals(&mut ip, out, n)?;
        state = if n < 4 { n } else { 4 };
    } else {
        state = 0;
    }
    loop {
        let b = byte(&mut ip)?;
        let (len, dist, s);
        if b < 16 {
            if state == 0 {
                let n = if b == 0 { extend(&mut ip, 15)? } else { b };
                literals(&mut ip, out, n + 3)?;
                state = 4;
                continue;
            }
            let h = byte(&mut ip)?;
            s = b & 3;
            if state < 4 {
                len = 2;
                dist = (h << 2) + ((b >> 2) & 3) + 1;
            } else {
                len = 3;
                dist = (h << 2) + ((b >> 2) & 3) + 2049;
            }
        } else if b < 32 {
            let l = b & 7;
            let n = if l == 0 { extend(&mut ip, 7)? } else { l };
            let d = byte(&mut ip)? | (byte(&mut ip)? << 8);
            s = d & 3;
            let far = 16384 + ((b & 8) << 11) + (d >> 2);
            if far == 16384 {
                // End of stream.
                return Ok(());
            }
            len = n + 2;
            dist = far;
        } else if b < 64 {
            let l = b & 31;
            let n = if l == 0 { extend(&mut ip, 31)? } else { l };
            let d = byte(&mut ip)? | (byte(&mut ip)? << 8);
            s = d & 3;
            len = n + 2;
            dist = (d >> 2) + 1;
        } else {
            let h = byte(&mut ip)?;
            s = b & 3;
            dist = (h << 3) + ((b >> 2) & 7) + 1;
            len = if b < 128 {
                3 + ((b >> 5) & 1)
            } else {
                5 + ((b >> 5) & 3)
            };
        }
        copy_match(out, dist, len)?;
        literals(&mut ip, out, s)?;
        state = s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-assembled LZO1X stream: 4 literals "abcd", a 6-byte match at
    /// distance 4 ("abcdab"), then the end marker.
    const STREAM: &[u8] = &[
        17 + 4,
        b'a',
        b'b',
        b'c',
        b'd',
        0x80 | (1 << 5) | (3 << 2),
        0,
        0x11,
        0,
        0,
    ];

    #[test]
    fn hand_made_stream_decodes() {
        let mut out = Vec::new();
        lzo1x_decompress(STREAM, &mut out, 4096).unwrap();
        assert_eq!(out, b"abcdabcdab");
    }

    #[test]
    fn btrfs_framing_decodes_and_caps() {
        let mut ext = Vec::new();
        ext.extend_from_slice(&((8 + STREAM.len()) as u32).to_le_bytes());
        ext.extend_from_slice(&(STREAM.len() as u32).to_le_bytes());
        ext.extend_from_slice(STREAM);
        assert_eq!(decompress_btrfs(&ext, 4096, 4096, 0).unwrap(), b"abcdabcdab");
        assert!(decompress_btrfs(&ext, 5, 4096, 0).is_err());
    }

    #[test]
    fn truncated_and_backward_matches_fail() {
        let mut out = Vec::new();
        assert!(lzo1x_decompress(&STREAM[..6], &mut out, 4096).is_err());
        let mut out = Vec::new();
        assert!(lzo1x_decompress(&[0x80, 9, 0x11, 0, 0], &mut out, 4096).is_err());
    }
}
