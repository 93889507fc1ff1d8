//! Decoders for the compressed segments of an initramfs, sans-I/O: each step
//! takes an input and an output slice and reports exactly how much input it
//! used, so the segment after a compressed one can be found, as the kernel does.

use serde::Serialize;
use v2x_formats::{Error, Result};

/// Memory the xz and lzma decoders may use for their dictionary, in KiB
/// (the kernel's own initramfs decoders use far less).
pub const MAX_DECODER_MEMORY_KB: u32 = 256 << 10;

/// Largest uncompressed block of the lz4 legacy frame format (fixed by the format).
pub const LZ4_LEGACY_BLOCK: usize = 8 << 20;

/// Largest compressed lz4 legacy block: the LZ4 worst-case bound of an 8 MiB block.
pub const MAX_LZ4_COMPRESSED_BLOCK: usize = LZ4_LEGACY_BLOCK + LZ4_LEGACY_BLOCK / 255 + 16;

/// Longest gzip header we accept (the optional name and comment fields are unbounded on disk).
pub const MAX_GZIP_HEADER: usize = 64 << 10;

const LZ4_LEGACY_MAGIC: u32 = 0x184C_2102;

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// How one initramfs segment is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// gzip (deflate), the historical default.
    Gzip,
    /// xz (LZMA2), as mkinitramfs and dracut write it.
    Xz,
    /// The legacy `.lzma` ("LZMA alone") format.
    Lzma,
    /// zstd.
    Zstd,
    /// lz4 in the legacy frame format (`lz4 -l`), the only lz4 flavour the kernel reads.
    Lz4,
    /// bzip2 (recognised, not decoded).
    Bzip2,
    /// lzop (recognised, not decoded).
    Lzo,
}

impl Compression {
    /// Recognises a compressed segment by its first bytes (at least 6 should be given).
    pub fn detect(head: &[u8]) -> Option<Self> {
        let starts = |m: &[u8]| head.starts_with(m);
        if starts(&[0x1f, 0x8b]) || starts(&[0x1f, 0x9e]) {
            Some(Self::Gzip)
        } else if starts(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Some(Self::Xz)
        } else if starts(&[0x5d, 0, 0]) {
            Some(Self::Lzma)
        } else if starts(&ZSTD_MAGIC) {
            Some(Self::Zstd)
        } else if starts(&LZ4_LEGACY_MAGIC.to_le_bytes()) {
            Some(Self::Lz4)
        } else if starts(b"BZh") {
            Some(Self::Bzip2)
        } else if starts(&[0x89, b'L', b'Z', b'O', 0]) {
            Some(Self::Lzo)
        } else {
            None
        }
    }

    /// The name used in messages and reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Gzip => "gzip",
            Self::Xz => "xz",
            Self::Lzma => "lzma",
            Self::Zstd => "zstd",
            Self::Lz4 => "lz4",
            Self::Bzip2 => "bzip2",
            Self::Lzo => "lzo",
        }
    }
}

/// What one [`Decoder::step`] did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Step {
    /// Input bytes used from the slice given.
    pub consumed: usize,
    /// Output bytes written.
    pub produced: usize,
    /// Input bytes of earlier steps that turned out to lie past the end of the stream.
    pub rewind: usize,
    /// The compressed stream has ended.
    pub done: bool,
}

enum GzipPhase {
    Header,
    Body,
    Trailer,
}

enum Lz4Phase {
    Magic,
    Blocks,
}

enum Inner {
    Gzip {
        phase: GzipPhase,
        inflate: flate2::Decompress,
        crc: crc32fast::Hasher,
        size: u32,
    },
    Xz(Box<lzma_rust2::XzStream>),
    Lzma {
        stream: Box<lzma_rust2::LzmaStream>,
    },
    Zstd {
        dec: Box<zstd::stream::raw::Decoder<'static>>,
        /// A frame has ended; another one may follow directly.
        between_frames: bool,
    },
    Lz4 {
        phase: Lz4Phase,
        block: Vec<u8>,
        start: usize,
        end: usize,
    },
}

/// A sans-I/O decoder of one compressed segment.
pub(crate) struct Decoder {
    inner: Inner,
    kind: Compression,
}

impl Decoder {
    /// A decoder for `kind`; bzip2 and lzo are [`Error::Unsupported`].
    pub fn new(kind: Compression) -> Result<Self> {
        let inner = match kind {
            Compression::Gzip => Inner::Gzip {
                phase: GzipPhase::Header,
                inflate: flate2::Decompress::new(false),
                crc: crc32fast::Hasher::new(),
                size: 0,
            },
            Compression::Xz => Inner::Xz(Box::new(lzma_rust2::XzStream::new_mem_limit(
                false,
                MAX_DECODER_MEMORY_KB,
            ))),
            Compression::Lzma => Inner::Lzma {
                stream: Box::new(lzma_rust2::LzmaStream::new_mem_limit(MAX_DECODER_MEMORY_KB, None)),
            },
            Compression::Zstd => Inner::Zstd {
                dec: Box::new(
                    zstd::stream::raw::Decoder::new().map_err(|e| Error::io("starting a zstd decoder", e))?,
                ),
                between_frames: false,
            },
            Compression::Lz4 => Inner::Lz4 {
                phase: Lz4Phase::Magic,
                block: Vec::new(),
                start: 0,
                end: 0,
            },
            Compression::Bzip2 | Compression::Lzo => {
                return Err(Error::unsupported(format!(
                    "{}-compressed initramfs segments",
                    kind.name()
                )))
            }
        };
        Ok(Self { inner, kind })
    }

    /// Decodes from `input` into `out`. `eof` says no input follows `input`.
    /// A step that neither consumes nor produces anything needs more input
    /// (or, with `eof`, found the stream truncated). Errors carry offsets
    /// relative to the caller's position, which the caller adds.
    pub fn step(&mut self, input: &[u8], eof: bool, out: &mut [u8]) -> Result<Step> {
        let name = self.kind.name();
        let bad = |e: &dyn std::fmt::Display| Error::corrupt(format!("{name} data: {e}"), 0);
        match &mut self.inner {
            Inner::Gzip {
                phase,
                inflate,
                crc,
                size,
            } => match phase {
                GzipPhase::Header => match gzip_header_len(input)? {
                    Some(n) => {
                        *phase = GzipPhase::Body;
                        Ok(Step {
                            consumed: n,
                            ..Step::default()
                        })
                    }
                    None if input.len() >= MAX_GZIP_HEADER => Err(Error::corrupt(
                        format!("gzip header longer than {MAX_GZIP_HEADER} bytes"),
                        0,
                    )),
                    None => Ok(Step::default()),
                },
                GzipPhase::Body => {
                    let (in0, out0) = (inflate.total_in(), inflate.total_out());
                    let status = inflate
                        .decompress(input, out, flate2::FlushDecompress::None)
                        .map_err(|e| bad(&e))?;
                    let consumed = (inflate.total_in() - in0) as usize;
                    let produced = (inflate.total_out() - out0) as usize;
                    crc.update(&out[..produced]);
                    *size = size.wrapping_add(produced as u32);
                    if status == flate2::Status::StreamEnd {
                        *phase = GzipPhase::Trailer;
                    }
                    Ok(Step {
                        consumed,
                        produced,
                        ..Step::default()
                    })
                }
                GzipPhase::Trailer => {
                    if input.len() < 8 {
                        return Ok(Step::default());
                    }
                    let want_crc = u32::from_le_bytes([input[0], input[1], input[2], input[3]]);
                    let want_size = u32::from_le_bytes([input[4], input[5], input[6], input[7]]);
                    let got = crc.clone().finalize();
                    if want_crc != got || want_size != *size {
                        return Err(Error::corrupt(
                            format!(
                                "gzip trailer says crc {want_crc:#x} size {want_size}, data has crc {got:#x} size {size}"
                            ),
                            0,
                        ));
                    }
                    Ok(Step {
                        consumed: 8,
                        done: true,
                        ..Step::default()
                    })
                }
            },
            Inner::Xz(stream) => {
                let action = if eof {
                    lzma_rust2::Action::Finish
                } else {
                    lzma_rust2::Action::Run
                };
                let r = stream.process(input, out, action).map_err(|e| bad(&e))?;
                Ok(Step {
                    consumed: r.bytes_consumed,
                    produced: r.bytes_produced,
                    rewind: 0,
                    done: r.status == lzma_rust2::Status::StreamEnd,
                })
            }
            Inner::Lzma { stream } => {
                let action = if eof {
                    lzma_rust2::Action::Finish
                } else {
                    lzma_rust2::Action::Run
                };
                let r = stream.process(input, out, action).map_err(|e| bad(&e))?;
                let done = r.status == lzma_rust2::Status::StreamEnd;
                let unused = if done { stream.unused_input().len() } else { 0 };
                // Unused bytes of this slice are simply not consumed; older ones are rewound.
                let here = unused.min(r.bytes_consumed);
                Ok(Step {
                    consumed: r.bytes_consumed - here,
                    produced: r.bytes_produced,
                    rewind: unused - here,
                    done,
                })
            }
            Inner::Zstd { dec, between_frames } => {
                use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
                if *between_frames {
                    // zstd may split its output into several frames; they form one segment.
                    if input.len() < 4 {
                        return Ok(Step {
                            done: eof,
                            ..Step::default()
                        });
                    }
                    if !input.starts_with(&ZSTD_MAGIC) {
                        return Ok(Step {
                            done: true,
                            ..Step::default()
                        });
                    }
                    *between_frames = false;
                }
                let mut inb = InBuffer::around(input);
                let mut outb = OutBuffer::around(out);
                let hint = dec.run(&mut inb, &mut outb).map_err(|e| bad(&e))?;
                *between_frames = hint == 0;
                Ok(Step {
                    consumed: inb.pos(),
                    produced: outb.pos(),
                    ..Step::default()
                })
            }
            Inner::Lz4 {
                phase,
                block,
                start,
                end,
            } => lz4_step(phase, block, start, end, input, eof, out),
        }
    }
}

/// Length of the gzip member header at the start of `b`, `None` if more bytes are needed.
fn gzip_header_len(b: &[u8]) -> Result<Option<usize>> {
    if b.len() < 10 {
        return Ok(None);
    }
    if b[2] != 8 {
        return Err(Error::corrupt(
            format!("gzip compression method {} is not deflate", b[2]),
            2,
        ));
    }
    let flags = b[3];
    if flags & 0xe0 != 0 {
        return Err(Error::corrupt(
            format!("gzip header has reserved flags {flags:#x}"),
            3,
        ));
    }
    let mut n = 10usize;
    if flags & 4 != 0 {
        let Some(x) = b.get(n..n + 2) else {
            return Ok(None);
        };
        n += 2 + usize::from(u16::from_le_bytes([x[0], x[1]]));
    }
    for flag in [8u8, 16] {
        if flags & flag != 0 {
            let Some(rest) = b.get(n..) else {
                return Ok(None);
            };
            match rest.iter().position(|&c| c == 0) {
                Some(z) => n += z + 1,
                None => return Ok(None),
            }
        }
    }
    if flags & 2 != 0 {
        n += 2;
    }
    Ok((n <= b.len()).then_some(n))
}

fn lz4_step(
    phase: &mut Lz4Phase,
    block: &mut Vec<u8>,
    start: &mut usize,
    end: &mut usize,
    input: &[u8],
    eof: bool,
    out: &mut [u8],
) -> Result<Step> {
    // Hand out what the last block decoded first.
    if *start < *end {
        let n = (*end - *start).min(out.len());
        out[..n].copy_from_slice(&block[*start..*start + n]);
        *start += n;
        return Ok(Step {
            produced: n,
            ..Step::default()
        });
    }
    if matches!(phase, Lz4Phase::Magic) {
        if input.len() < 4 {
            return Ok(Step::default());
        }
        *phase = Lz4Phase::Blocks;
        return Ok(Step {
            consumed: 4,
            ..Step::default()
        });
    }
    if input.len() < 4 {
        // The format has no end marker: the input simply ends.
        return Ok(Step {
            done: eof,
            ..Step::default()
        });
    }
    let size = u32::from_le_bytes([input[0], input[1], input[2], input[3]]);
    if size == LZ4_LEGACY_MAGIC {
        return Ok(Step {
            consumed: 4,
            ..Step::default()
        });
    }
    let size = size as usize;
    if size == 0 || size > MAX_LZ4_COMPRESSED_BLOCK {
        // Not a block length: padding or the next segment begins here.
        return Ok(Step {
            done: true,
            ..Step::default()
        });
    }
    let Some(data) = input.get(4..4 + size) else {
        if eof {
            return Err(Error::corrupt(
                format!("lz4 block of {size} bytes is cut short"),
                0,
            ));
        }
        return Ok(Step::default());
    };
    if block.is_empty() {
        block.resize(LZ4_LEGACY_BLOCK, 0);
    }
    let n = lz4_flex::block::decompress_into(data, block)
        .map_err(|e| Error::corrupt(format!("lz4 block: {e}"), 0))?;
    *start = 0;
    *end = n;
    Ok(Step {
        consumed: 4 + size,
        ..Step::default()
    })
}
