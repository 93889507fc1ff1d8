//! Initramfs reader: the concatenated archives the kernel unpacks at boot.
//!
//! An initramfs is a sequence of segments: uncompressed cpio archives (the
//! early microcode one comes first on Debian and Ubuntu), zero padding, and
//! compressed streams (gzip, xz, lzma, zstd, lz4 legacy) each holding one or
//! more cpio archives. Everything is streamed: only the current header, a
//! 64 KiB window and the files a caller asks for are held in memory, and the
//! total unpacked size is counted against [`MAX_INITRAMFS_UNPACKED`].

pub mod cpio;
pub mod decompress;

use crate::fs::guest::GuestRoot;
use cpio::{pad4, parse_header, Entry, HEADER_LEN, TRAILER};
use decompress::{Compression, Decoder, MAX_LZ4_COMPRESSED_BLOCK};
use serde::Serialize;
use v2x_formats::error::check_limit;
use v2x_formats::{Error, Result};

/// Most bytes (uncompressed cpio data) one walk may go through. Counted, never allocated.
pub const MAX_INITRAMFS_UNPACKED: u64 = 2 << 30;

/// Most entries one initramfs may have.
pub const MAX_CPIO_ENTRIES: usize = 1 << 20;

/// Largest file whose content is read into memory.
pub const MAX_FILE_SIZE: u64 = 256 << 20;

/// Most segments (archives and compressed streams) one initramfs may have.
pub const MAX_SEGMENTS: usize = 256;

/// Window of decoded bytes held at once.
const CHUNK: usize = 64 << 10;

/// Most compressed input held at once (one whole lz4 block plus slack).
const MAX_INPUT_WINDOW: usize = MAX_LZ4_COMPRESSED_BLOCK + 4 + CHUNK;

/// Random-access bytes an initramfs is read from.
pub trait ByteSource {
    /// Total length in bytes.
    fn len(&self) -> u64;
    /// True when there are no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Reads up to `buf.len()` bytes at `offset`; returns 0 only at the end.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize>;
}

impl ByteSource for &[u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let data: &[u8] = self;
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(data.len());
        let n = buf.len().min(data.len() - start);
        buf[..n].copy_from_slice(&data[start..start + n]);
        Ok(n)
    }
}

impl ByteSource for Vec<u8> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.as_slice().read_at(offset, buf)
    }
}

/// A file inside the guest, read through [`GuestRoot`] (symlinks followed).
pub struct GuestFile<'a> {
    root: &'a GuestRoot,
    path: String,
    len: u64,
}

impl<'a> GuestFile<'a> {
    /// Opens the guest file at `path`.
    pub fn open(root: &'a GuestRoot, path: &str) -> Result<Self> {
        let resolved = root.resolve(path, true)?;
        let len = root.stat(&resolved.guest_path)?.size;
        Ok(Self {
            root,
            path: resolved.guest_path,
            len,
        })
    }
}

impl ByteSource for GuestFile<'_> {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let data = self.root.read_range(&self.path, offset, buf.len() as u64)?;
        let n = data.len().min(buf.len());
        buf[..n].copy_from_slice(&data[..n]);
        Ok(n)
    }
}

/// One segment of an initramfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Segment {
    /// Byte offset of the segment in the initramfs file.
    pub offset: u64,
    /// Compression of the segment; `None` for a plain cpio archive.
    pub compression: Option<Compression>,
    /// Number of entries (trailers not counted) it holds.
    pub entries: usize,
}

/// Everything in an initramfs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Listing {
    /// The segments, in file order.
    pub segments: Vec<Segment>,
    /// All entries, in archive order (a later one with the same path replaces an earlier one at boot).
    pub entries: Vec<Entry>,
}

impl Listing {
    /// True when some entry has the normalised `path`.
    pub fn contains(&self, path: &str) -> bool {
        let want = cpio::normalize(path);
        self.entries.iter().any(|e| e.path() == want)
    }
}

/// Receives the entries of a [`walk`].
pub trait Visitor {
    /// Called for every entry; return true to receive its data through [`Visitor::data`].
    fn entry(&mut self, entry: &Entry) -> Result<bool>;
    /// The whole data of an entry that [`Visitor::entry`] asked for.
    fn data(&mut self, entry: &Entry, data: Vec<u8>) -> Result<()>;
}

/// Walks every entry of every segment of `src`, unpacking at most `max_unpacked` bytes.
pub fn walk(src: &dyn ByteSource, max_unpacked: u64, v: &mut dyn Visitor) -> Result<Vec<Segment>> {
    walk_inner(src, max_unpacked, v, true)
}

/// Lists a plain cpio archive (or several concatenated), refusing compressed data.
pub fn list_cpio(data: &[u8]) -> Result<Vec<Entry>> {
    let mut c = Collect(Vec::new());
    walk_inner(&data, MAX_INITRAMFS_UNPACKED, &mut c, false)?;
    Ok(c.0)
}

struct Collect(Vec<Entry>);

impl Visitor for Collect {
    fn entry(&mut self, entry: &Entry) -> Result<bool> {
        self.0.push(entry.clone());
        Ok(false)
    }
    fn data(&mut self, _: &Entry, _: Vec<u8>) -> Result<()> {
        Ok(())
    }
}

fn walk_inner(
    src: &dyn ByteSource,
    max_unpacked: u64,
    v: &mut dyn Visitor,
    allow_compressed: bool,
) -> Result<Vec<Segment>> {
    let mut w = Walk {
        segments: Vec::new(),
        entries: 0,
    };
    let mut s = Stream::raw(src, 0, 0, max_unpacked);
    loop {
        if !s.skip_zeros()? {
            return Ok(w.segments);
        }
        let at = s.pos;
        s.ensure(6)?;
        let head = s.avail();
        if head.starts_with(b"07070") {
            w.new_segment(at, None)?;
            w.archive(&mut s, v)?;
            continue;
        }
        let kind = Compression::detect(head).filter(|_| allow_compressed);
        let Some(kind) = kind else {
            return Err(Error::corrupt(
                "initramfs data is neither cpio nor a known compression",
                at,
            ));
        };
        w.new_segment(at, Some(kind))?;
        let mut d = Stream::decoded(src, at, kind, s.unpacked, max_unpacked)?;
        loop {
            if !d.skip_zeros()? {
                break;
            }
            let pos = d.pos;
            d.ensure(6)?;
            if !d.avail().starts_with(b"07070") {
                return Err(d.corrupt("data that is not a cpio archive", pos));
            }
            w.archive(&mut d, v)?;
        }
        let end = d.raw_end();
        s = Stream::raw(src, end, d.unpacked, max_unpacked);
    }
}

/// Lists an initramfs (up to [`MAX_INITRAMFS_UNPACKED`] unpacked bytes).
pub fn list(src: &dyn ByteSource) -> Result<Listing> {
    list_limited(src, MAX_INITRAMFS_UNPACKED)
}

/// Lists an initramfs, unpacking at most `max_unpacked` bytes.
pub fn list_limited(src: &dyn ByteSource, max_unpacked: u64) -> Result<Listing> {
    let mut c = Collect(Vec::new());
    let segments = walk(src, max_unpacked, &mut c)?;
    Ok(Listing {
        segments,
        entries: c.0,
    })
}

/// Reads the regular file at `path` (normalised, so "usr/x" and "/usr/x"
/// match "./usr/x"); the last copy wins, as at boot. `Ok(None)` when absent.
pub fn read_file(src: &dyn ByteSource, path: &str) -> Result<Option<Vec<u8>>> {
    struct Find {
        want: String,
        found: Option<Vec<u8>>,
    }
    impl Visitor for Find {
        fn entry(&mut self, entry: &Entry) -> Result<bool> {
            Ok(entry.is_file() && entry.path() == self.want)
        }
        fn data(&mut self, _: &Entry, data: Vec<u8>) -> Result<()> {
            self.found = Some(data);
            Ok(())
        }
    }
    let mut f = Find {
        want: cpio::normalize(path),
        found: None,
    };
    walk(src, MAX_INITRAMFS_UNPACKED, &mut f)?;
    Ok(f.found)
}

struct Walk {
    segments: Vec<Segment>,
    entries: usize,
}

impl Walk {
    fn new_segment(&mut self, offset: u64, compression: Option<Compression>) -> Result<()> {
        check_limit(
            "initramfs segments",
            self.segments.len() as u64 + 1,
            MAX_SEGMENTS as u64,
        )?;
        self.segments.push(Segment {
            offset,
            compression,
            entries: 0,
        });
        Ok(())
    }

    /// Parses one cpio archive, up to and including its trailer.
    fn archive(&mut self, s: &mut Stream, v: &mut dyn Visitor) -> Result<()> {
        let start = s.pos;
        let segment = self.segments.len() - 1;
        loop {
            let at = s.pos;
            if !s.ensure(HEADER_LEN)? {
                return Err(s.corrupt("cpio header cut short", at));
            }
            let raw: [u8; HEADER_LEN] = s.avail()[..HEADER_LEN]
                .try_into()
                .map_err(|_| s.corrupt("cpio header", at))?;
            let h = parse_header(&raw, at).map_err(|e| s.relocate(e))?;
            s.consume(HEADER_LEN);
            let namesize = h.namesize as usize;
            if !s.ensure(namesize)? {
                return Err(s.corrupt("cpio entry name cut short", s.pos));
            }
            let name_bytes = &s.avail()[..namesize];
            if name_bytes[namesize - 1] != 0 {
                return Err(s.corrupt("cpio entry name is not NUL-terminated", s.pos));
            }
            let name = String::from_utf8_lossy(&name_bytes[..namesize - 1]).into_owned();
            s.consume(namesize);
            s.skip(pad4(s.pos - start))?;
            if name == TRAILER {
                return Ok(());
            }
            check_limit(
                "initramfs entries",
                self.entries as u64 + 1,
                MAX_CPIO_ENTRIES as u64,
            )?;
            self.entries += 1;
            self.segments[segment].entries += 1;
            let entry = Entry {
                name,
                mode: h.mode,
                size: u64::from(h.filesize),
                segment,
            };
            let want = v.entry(&entry)?;
            if want {
                check_limit("initramfs file size", entry.size, MAX_FILE_SIZE)?;
            }
            let data_at = s.pos;
            let (data, sum) = s.data(entry.size, want)?;
            let Some(data) = data else {
                return Err(s.corrupt(format!("data of {} cut short", entry.name), data_at));
            };
            if h.has_crc && entry.is_file() && sum != h.check {
                return Err(s.corrupt(
                    format!(
                        "cpio checksum of {} is {:#x}, header says {:#x}",
                        entry.name, sum, h.check
                    ),
                    at,
                ));
            }
            s.skip(pad4(s.pos - start))?;
            if want {
                v.data(&entry, data)?;
            }
        }
    }
}

struct DecodeState {
    dec: Decoder,
    kind: Compression,
    seg_offset: u64,
    /// Raw offset of `inbuf[in_start]`.
    in_pos: u64,
    inbuf: Vec<u8>,
    in_start: usize,
    in_end: usize,
    in_eof: bool,
    done: bool,
}

/// A pull stream of archive bytes: raw initramfs bytes or a decoded segment.
struct Stream<'a> {
    src: &'a dyn ByteSource,
    dec: Option<Box<DecodeState>>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Stream offset of `buf[start]` (raw file offset for a raw stream).
    pos: u64,
    /// Next raw offset to read (raw streams).
    raw_next: u64,
    unpacked: u64,
    max_unpacked: u64,
}

impl<'a> Stream<'a> {
    fn raw(src: &'a dyn ByteSource, at: u64, unpacked: u64, max_unpacked: u64) -> Self {
        Self {
            src,
            dec: None,
            buf: vec![0; CHUNK],
            start: 0,
            end: 0,
            pos: at,
            raw_next: at,
            unpacked,
            max_unpacked,
        }
    }

    fn decoded(
        src: &'a dyn ByteSource,
        at: u64,
        kind: Compression,
        unpacked: u64,
        max_unpacked: u64,
    ) -> Result<Self> {
        let dec = Decoder::new(kind).map_err(|e| match e {
            Error::Unsupported(m) => Error::Unsupported(format!("{m} (segment at {at:#x})")),
            e => e,
        })?;
        let mut s = Self::raw(src, 0, unpacked, max_unpacked);
        s.dec = Some(Box::new(DecodeState {
            dec,
            kind,
            seg_offset: at,
            in_pos: at,
            inbuf: Vec::new(),
            in_start: 0,
            in_end: 0,
            in_eof: false,
            done: false,
        }));
        Ok(s)
    }

    /// Raw offset just past the decoded segment.
    fn raw_end(&self) -> u64 {
        self.dec.as_ref().map_or(self.raw_next, |d| d.in_pos)
    }

    /// Adds the segment's name to errors found in decoded data.
    fn relocate(&self, e: Error) -> Error {
        match (&self.dec, e) {
            (Some(d), Error::Corrupt { what, offset }) => Error::corrupt(
                format!(
                    "{what} (offset is into the {} segment at {:#x}, decompressed)",
                    d.kind.name(),
                    d.seg_offset
                ),
                offset,
            ),
            (_, e) => e,
        }
    }

    fn corrupt(&self, what: impl std::fmt::Display, at: u64) -> Error {
        self.relocate(Error::corrupt(what, at))
    }

    fn avail(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        self.pos += n as u64;
    }

    /// Makes at least `n` (≤ CHUNK) bytes available; false at end of stream.
    fn ensure(&mut self, n: usize) -> Result<bool> {
        while self.end - self.start < n {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let got = self.produce()?;
            if got == 0 {
                return Ok(false);
            }
            self.unpacked += got as u64;
            check_limit("unpacked initramfs bytes", self.unpacked, self.max_unpacked)?;
            self.end += got;
        }
        Ok(true)
    }

    /// Skips zero padding; false when the stream ends.
    fn skip_zeros(&mut self) -> Result<bool> {
        loop {
            if !self.ensure(1)? {
                return Ok(false);
            }
            let zeros = self.avail().iter().take_while(|&&b| b == 0).count();
            if zeros == 0 {
                return Ok(true);
            }
            self.consume(zeros);
        }
    }

    /// Skips up to `n` bytes (padding may be missing at the very end).
    fn skip(&mut self, n: u64) -> Result<()> {
        let mut left = n;
        while left > 0 {
            if !self.ensure(1)? {
                return Ok(());
            }
            let k = (self.end - self.start).min(usize::try_from(left).unwrap_or(usize::MAX));
            self.consume(k);
            left -= k as u64;
        }
        Ok(())
    }

    /// Reads (`keep`) or skips `n` bytes of file data, returning it and its byte
    /// sum; `None` when the stream ends first.
    fn data(&mut self, n: u64, keep: bool) -> Result<(Option<Vec<u8>>, u32)> {
        let mut out = Vec::new();
        if keep {
            out.reserve_exact(usize::try_from(n).unwrap_or(0));
        }
        let mut sum = 0u32;
        let mut left = n;
        while left > 0 {
            if !self.ensure(1)? {
                return Ok((None, sum));
            }
            let k = (self.end - self.start).min(usize::try_from(left).unwrap_or(usize::MAX));
            let part = &self.buf[self.start..self.start + k];
            sum = part.iter().fold(sum, |a, &b| a.wrapping_add(u32::from(b)));
            if keep {
                out.extend_from_slice(part);
            }
            self.consume(k);
            left -= k as u64;
        }
        Ok((Some(out), sum))
    }

    /// Produces more bytes into `buf[end..]`; 0 at end of stream.
    fn produce(&mut self) -> Result<usize> {
        let Some(d) = self.dec.as_mut() else {
            let n = self.src.read_at(self.raw_next, &mut self.buf[self.end..])?;
            self.raw_next += n as u64;
            return Ok(n);
        };
        let src = self.src;
        let out = &mut self.buf[self.end..];
        loop {
            if d.done {
                return Ok(0);
            }
            let input = &d.inbuf[d.in_start..d.in_end];
            let step = d.dec.step(input, d.in_eof, out).map_err(|e| match e {
                Error::Corrupt { what, offset } => Error::corrupt(
                    format!("{what} (in the {} segment at {:#x})", d.kind.name(), d.seg_offset),
                    d.in_pos.saturating_add(offset),
                ),
                e => e,
            })?;
            d.in_start += step.consumed;
            d.in_pos += step.consumed as u64;
            if step.done {
                d.in_pos = d.in_pos.saturating_sub(step.rewind as u64);
                d.done = true;
                return Ok(step.produced);
            }
            if step.produced > 0 {
                return Ok(step.produced);
            }
            if step.consumed > 0 {
                continue;
            }
            // No progress: the decoder needs more input than it has.
            if d.in_eof {
                return Err(Error::corrupt(
                    format!(
                        "{} segment at {:#x} ends before its stream does",
                        d.kind.name(),
                        d.seg_offset
                    ),
                    d.in_pos,
                ));
            }
            d.inbuf.drain(..d.in_start);
            d.in_end -= d.in_start;
            d.in_start = 0;
            let want = (d.in_end + CHUNK).min(MAX_INPUT_WINDOW);
            if want <= d.in_end {
                return Err(Error::corrupt(
                    format!(
                        "{} segment needs more than {MAX_INPUT_WINDOW} bytes of input at once",
                        d.kind.name()
                    ),
                    d.in_pos,
                ));
            }
            d.inbuf.resize(want, 0);
            let raw_at = d.in_pos + d.in_end as u64;
            let n = src.read_at(raw_at, &mut d.inbuf[d.in_end..want])?;
            d.in_end += n;
            d.inbuf.truncate(d.in_end);
            if n == 0 || raw_at + n as u64 >= src.len() {
                d.in_eof = true;
            }
        }
    }
}

/// Fuzzing entry: detects and decodes every segment of `data` with a small
/// unpacking budget, reading the content of every small file.
pub fn fuzz_walk(data: &[u8]) {
    struct All;
    impl Visitor for All {
        fn entry(&mut self, entry: &Entry) -> Result<bool> {
            Ok(entry.size <= 1 << 20)
        }
        fn data(&mut self, _: &Entry, _: Vec<u8>) -> Result<()> {
            Ok(())
        }
    }
    let _ = walk(&data, 64 << 20, &mut All);
}

#[cfg(test)]
mod tests;
