//! Measures the qcow2 writer the way the copier drives it.
//!
//! `qcow2_write_bench gen RAW SIZE_MIB` writes a deterministic, mostly random
//! raw disk (70% random, 20% compressible text, 10% zeros, in 1 MiB runs).
//! `qcow2_write_bench write RAW OUT [none|zlib|zstd] [LEVEL]` converts it
//! (`RAW` = `synth:MIB` generates the same disk on the fly instead):
//! 1 MiB chunks read and encoded on all cores, written in order, and prints
//! the throughput. Compare with `qemu-img convert -m 16 -W -O qcow2`.

use rayon::prelude::*;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::Instant;
use v2x_formats::{create_writer, Compression, OutputFormat, WriteOptions};

const CHUNK: u64 = 1 << 20;
/// Chunks read and encoded in parallel before being written in order.
const BATCH: usize = 16;

/// Contents of 1 MiB chunk `i` of the synthetic disk.
fn synth_chunk(i: u64, buf: &mut [u8]) {
    let mut x = (i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    match x % 10 {
        0 => buf.fill(0),
        1 | 2 => {
            for (j, b) in buf.iter_mut().enumerate() {
                *b = b"the quick brown fox jumps over the lazy v2x disk\n"[(j + i as usize) % 49];
            }
        }
        _ => {
            for c in buf.chunks_mut(8) {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                c.copy_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
            }
        }
    }
}

fn generate(path: &str, size_mib: u64) {
    let file = File::create(path).unwrap();
    file.set_len(size_mib * CHUNK).unwrap();
    (0..size_mib).into_par_iter().for_each(|i| {
        let mut buf = vec![0u8; CHUNK as usize];
        synth_chunk(i, &mut buf);
        if buf.iter().all(|b| *b == 0) {
            return;
        }
        file.write_all_at(&buf, i * CHUNK).unwrap();
    });
}

/// Where the benchmark's guest bytes come from.
enum Source {
    File(File),
    /// The synthetic disk, generated on the fly, of this many bytes.
    Synth(u64),
}

impl Source {
    fn size(&self) -> u64 {
        match self {
            Source::File(f) => f.metadata().unwrap().len(),
            Source::Synth(n) => *n,
        }
    }
    fn read(&self, buf: &mut [u8], off: u64) {
        match self {
            Source::File(f) => f.read_exact_at(buf, off).unwrap(),
            Source::Synth(_) => synth_chunk(off / CHUNK, buf),
        }
    }
}

fn write(raw: &str, out: &str, compression: Option<Compression>, level: Option<i32>) {
    let input = match raw.strip_prefix("synth:") {
        Some(mib) => Source::Synth(mib.parse::<u64>().unwrap() * CHUNK),
        None => Source::File(File::open(raw).unwrap()),
    };
    let size = input.size();
    let opts = WriteOptions {
        compression,
        compression_level: level,
        ..WriteOptions::default()
    };
    let start = Instant::now();
    let mut writer = create_writer(OutputFormat::Qcow2, File::create(out).unwrap(), size, &opts).unwrap();
    let encoder = writer.encoder();
    let offsets: Vec<u64> = (0..size.div_ceil(CHUNK)).map(|i| i * CHUNK).collect();
    let mut write_time = 0.0;
    // Like the copier: workers read and encode the next batch while this
    // thread writes the previous one.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<_>>(2);
    std::thread::scope(|scope| {
        let encoder = &encoder;
        let input = &input;
        let offsets = &offsets;
        scope.spawn(move || {
            for batch in offsets.chunks(BATCH) {
                let chunks: Vec<_> = batch
                    .par_iter()
                    .filter_map(|&off| {
                        let mut buf = vec![0u8; (size - off).min(CHUNK) as usize];
                        input.read(&mut buf, off);
                        if buf.iter().all(|b| *b == 0) {
                            return None;
                        }
                        Some(encoder.encode(off, buf).unwrap())
                    })
                    .collect();
                tx.send(chunks).unwrap();
            }
        });
        for chunks in rx {
            let t = Instant::now();
            for chunk in chunks {
                writer.write_chunk(&chunk).unwrap();
            }
            write_time += t.elapsed().as_secs_f64();
        }
    });
    let t = Instant::now();
    let summary = writer.finish().unwrap();
    let finish_time = t.elapsed().as_secs_f64();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{:?} level {:?}: {:.0} MB/s ({:.2} s; {:.2} s in write_chunk, {:.2} s in finish+sync), file {} MiB",
        compression,
        level,
        size as f64 / secs / 1e6,
        secs,
        write_time,
        finish_time,
        summary.file_size >> 20
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("gen") => generate(&args[2], args[3].parse().unwrap()),
        Some("write") => {
            let compression = match args.get(4).map(String::as_str) {
                None | Some("none") => None,
                Some(c) => Some(c.parse().unwrap()),
            };
            write(
                &args[2],
                &args[3],
                compression,
                args.get(5).map(|l| l.parse().unwrap()),
            );
        }
        _ => eprintln!("usage: qcow2_write_bench gen RAW SIZE_MIB | write RAW OUT [none|zlib|zstd] [LEVEL]"),
    }
}
