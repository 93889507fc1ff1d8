//! Decompression of qcow2 compressed clusters. The output buffer is exactly
//! one cluster and is never grown, so a hostile stream cannot make us
//! allocate more than that; a stream that yields fewer or more bytes than a
//! cluster is corruption.

use super::header::CompressionType;
use crate::error::{Error, Result};
use flate2::{Decompress, FlushDecompress, Status};
use std::cell::RefCell;
use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};
use zstd::zstd_safe::DParameter;

/// Largest zstd window we let a frame ask for (4 MiB, twice the largest cluster).
const MAX_ZSTD_WINDOW_LOG: u32 = 22;
/// Most decoder steps per cluster; each step makes progress or we stop.
const ZSTD_STEP_LIMIT: usize = 1 << 16;

/// Decompresses `input` (found at image offset `at`) into exactly `out.len()` bytes.
pub fn decompress(kind: CompressionType, input: &[u8], out: &mut [u8], at: u64) -> Result<()> {
    match kind {
        CompressionType::Deflate => inflate(input, out, at),
        CompressionType::Zstd => unzstd(input, out, at),
    }
}

fn short(got: usize, want: usize, at: u64) -> Error {
    Error::corrupt(
        format!("compressed cluster decompresses to {got} bytes, expected {want}"),
        at,
    )
}

fn overlong(at: u64) -> Error {
    Error::corrupt("compressed cluster decompresses to more than one cluster", at)
}

fn inflate(input: &[u8], out: &mut [u8], at: u64) -> Result<()> {
    INFLATER.with(|cell| {
        let mut d = cell.borrow_mut();
        d.reset(false);
        inflate_with(&mut d, input, out, at)
    })
}

fn inflate_with(d: &mut Decompress, input: &[u8], out: &mut [u8], at: u64) -> Result<()> {
    let status = d
        .decompress(input, out, FlushDecompress::Finish)
        .map_err(|e| Error::corrupt(format!("bad deflate stream in compressed cluster: {e}"), at))?;
    let got = d.total_out() as usize;
    if got != out.len() {
        return Err(short(got, out.len(), at));
    }
    if status != Status::StreamEnd {
        // The cluster is full; the stream must not have anything more to say.
        let used = (d.total_in() as usize).min(input.len());
        let mut extra = [0u8; 1];
        let _ = d.decompress(&input[used..], &mut extra, FlushDecompress::Finish);
        if d.total_out() as usize > out.len() {
            return Err(overlong(at));
        }
    }
    Ok(())
}

fn unzstd(input: &[u8], out: &mut [u8], at: u64) -> Result<()> {
    // A decoder context is costly to set up; each thread keeps one and resets it.
    DECODER.with(|cell| {
        let mut slot = cell.borrow_mut();
        let dec = match &mut *slot {
            Some(d) => {
                d.reinit().map_err(|e| Error::io("resetting a zstd decoder", e))?;
                d
            }
            None => {
                let mut d = Decoder::new().map_err(|e| Error::io("creating a zstd decoder", e))?;
                d.set_parameter(DParameter::WindowLogMax(MAX_ZSTD_WINDOW_LOG))
                    .map_err(|e| Error::io("configuring a zstd decoder", e))?;
                slot.insert(d)
            }
        };
        unzstd_with(dec, input, out, at)
    })
}

thread_local! {
    static INFLATER: RefCell<Decompress> = RefCell::new(Decompress::new(false));
    static DECODER: RefCell<Option<Decoder<'static>>> = const { RefCell::new(None) };
}

fn unzstd_with(dec: &mut Decoder<'static>, input: &[u8], out: &mut [u8], at: u64) -> Result<()> {
    let bad = |e: std::io::Error| Error::corrupt(format!("bad zstd stream in compressed cluster: {e}"), at);
    let want = out.len();
    let mut inb = InBuffer::around(input);
    let mut frame_done = false;
    let mut got = 0;
    {
        let mut outb = OutBuffer::around(&mut *out);
        for _ in 0..ZSTD_STEP_LIMIT {
            let (in_before, out_before) = (inb.pos(), outb.pos());
            let hint = dec.run(&mut inb, &mut outb).map_err(bad)?;
            got = outb.pos();
            if hint == 0 {
                frame_done = true;
            }
            if got == want || frame_done || (inb.pos() == in_before && got == out_before) {
                break;
            }
        }
    }
    if got != want {
        return Err(short(got, want, at));
    }
    if !frame_done {
        let mut extra = [0u8; 1];
        let mut outb = OutBuffer::around(&mut extra[..]);
        // An error here is past the cluster's end and does not matter.
        if dec.run(&mut inb, &mut outb).is_ok() && outb.pos() > 0 {
            return Err(overlong(at));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn deflate(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn deflate_exact_short_and_long() {
        let data: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        let c = deflate(&data);
        let mut out = vec![0u8; 4096];
        decompress(CompressionType::Deflate, &c, &mut out, 0).unwrap();
        assert_eq!(out, data);
        let mut padded = c.clone();
        padded.extend_from_slice(&[0u8; 300]);
        decompress(CompressionType::Deflate, &padded, &mut out, 0).unwrap();
        let mut small = vec![0u8; 2048];
        assert!(matches!(
            decompress(CompressionType::Deflate, &c, &mut small, 0),
            Err(Error::Corrupt { .. })
        ));
        let mut big = vec![0u8; 8192];
        assert!(matches!(
            decompress(CompressionType::Deflate, &c, &mut big, 0),
            Err(Error::Corrupt { .. })
        ));
        assert!(decompress(CompressionType::Deflate, &[0xff; 64], &mut out, 0).is_err());
    }

    #[test]
    fn zstd_exact_short_and_long() {
        let data: Vec<u8> = (0..65536u32).map(|i| (i / 7) as u8).collect();
        let c = zstd::bulk::compress(&data, 3).unwrap();
        let mut out = vec![0u8; 65536];
        decompress(CompressionType::Zstd, &c, &mut out, 0).unwrap();
        assert_eq!(out, data);
        let mut padded = c.clone();
        padded.extend_from_slice(&[0u8; 511]);
        decompress(CompressionType::Zstd, &padded, &mut out, 0).unwrap();
        let mut small = vec![0u8; 4096];
        assert!(matches!(
            decompress(CompressionType::Zstd, &c, &mut small, 0),
            Err(Error::Corrupt { .. })
        ));
        let mut big = vec![0u8; 131072];
        assert!(matches!(
            decompress(CompressionType::Zstd, &c, &mut big, 0),
            Err(Error::Corrupt { .. })
        ));
        assert!(decompress(CompressionType::Zstd, &[0xff; 64], &mut out, 0).is_err());
    }

    #[test]
    fn cap_zstd_window() {
        // A frame declaring an 8 MiB window is refused before any output.
        let big: Vec<u8> = (0..8u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let mut z = zstd::bulk::Compressor::new(1).unwrap();
        z.set_parameter(zstd::zstd_safe::CParameter::WindowLog(23))
            .unwrap();
        let c = z.compress(&big).unwrap();
        let mut out = vec![0u8; 65536];
        match decompress(CompressionType::Zstd, &c, &mut out, 0) {
            Err(Error::Corrupt { what, .. }) => assert!(what.contains("memory"), "{what}"),
            other => panic!("expected the window cap, got {other:?}"),
        }
    }

    #[test]
    fn zip_bomb_stays_within_one_cluster() {
        // 64 MiB of zeros compresses to a few KiB; we must stop after one cluster.
        let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 3).unwrap();
        let mut out = vec![0u8; 65536];
        assert!(matches!(
            decompress(CompressionType::Zstd, &bomb, &mut out, 0),
            Err(Error::Corrupt { .. })
        ));
        let bomb = deflate(&vec![0u8; 64 << 20]);
        assert!(matches!(
            decompress(CompressionType::Deflate, &bomb, &mut out, 0),
            Err(Error::Corrupt { .. })
        ));
    }
}
