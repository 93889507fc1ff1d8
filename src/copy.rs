//! The parallel, sparse-aware block copier.
//!
//! The source's allocation map is walked in windows and cut into chunks
//! aligned to the writer's cluster size. Chunks with no data are never read.
//! Batches of data chunks are read and encoded (zero detection, compression)
//! on a rayon pool while one writer thread stores the previous batch in
//! order, so output is deterministic and memory is bounded by three batches
//! (one being written, one queued, one being read).

use rayon::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use v2x_formats::block::{BlockSource, ExtentKind};
use v2x_formats::error::{Error, Result};
use v2x_formats::sink::{ChunkEncoder, EncodedChunk, ImageWriter, WriteSummary};

/// Default bytes per chunk handed to workers.
pub const DEFAULT_CHUNK: u64 = 2 << 20;
/// How much of the allocation map is fetched at once.
const MAP_WINDOW: u64 = 1 << 30;

/// Tuning of a copy.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Worker threads for reading and encoding.
    pub threads: usize,
    /// Bytes per chunk (rounded up to the writer's cluster size).
    pub chunk_size: u64,
    /// Chunks per batch; three batches are in memory at most.
    pub batch: usize,
    /// Set (e.g. by a SIGINT handler) to stop the copy between batches.
    pub cancel: Option<Arc<AtomicBool>>,
}

/// The error a cancelled copy ends with (an `Io` error of kind `Interrupted`).
pub fn interrupted() -> Error {
    Error::io(
        "copy",
        std::io::Error::new(std::io::ErrorKind::Interrupted, "interrupted by signal"),
    )
}

impl Default for CopyOptions {
    fn default() -> Self {
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        CopyOptions {
            threads,
            chunk_size: DEFAULT_CHUNK,
            batch: 16,
            cancel: None,
        }
    }
}

/// What a copy did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CopyStats {
    /// Guest bytes the source map called data (and so were read).
    pub bytes_read: u64,
    /// Guest bytes skipped without reading (holes and zero extents).
    pub bytes_skipped: u64,
    /// What the writer reported.
    pub output: WriteSummary,
}

/// One chunk of work: a guest range and the parts of it that hold data.
#[derive(Debug)]
struct Job {
    offset: u64,
    len: u64,
    /// (start, len) relative to `offset`.
    data: Vec<(u64, u64)>,
}

/// Cuts the allocation map into jobs, one map window at a time.
struct Planner<'a> {
    src: &'a dyn BlockSource,
    chunk: u64,
    pos: u64,
    size: u64,
    pending: std::collections::VecDeque<Job>,
    skipped: u64,
}

impl<'a> Planner<'a> {
    fn new(src: &'a dyn BlockSource, chunk: u64) -> Self {
        Planner {
            src,
            chunk,
            pos: 0,
            size: src.size(),
            pending: Default::default(),
            skipped: 0,
        }
    }

    /// Fetches the next map window and turns it into jobs.
    fn refill(&mut self) -> Result<()> {
        while self.pending.is_empty() && self.pos < self.size {
            let start = self.pos;
            let window = MAP_WINDOW - MAP_WINDOW % self.chunk;
            let len = window.max(self.chunk).min(self.size - start);
            let map = self.src.map(start, len)?;
            check_map(&map, start, len)?;
            let mut cur: Option<Job> = None;
            for e in &map {
                if e.kind != ExtentKind::Data {
                    self.skipped += e.len;
                    continue;
                }
                let mut s = e.start;
                while s < e.end() {
                    let chunk_start = s - s % self.chunk;
                    let chunk_end = (chunk_start + self.chunk).min(self.size);
                    let piece_end = e.end().min(chunk_end);
                    match &mut cur {
                        Some(j) if j.offset == chunk_start => j.data.push((s - chunk_start, piece_end - s)),
                        _ => {
                            if let Some(j) = cur.take() {
                                self.pending.push_back(j);
                            }
                            cur = Some(Job {
                                offset: chunk_start,
                                len: chunk_end - chunk_start,
                                data: vec![(s - chunk_start, piece_end - s)],
                            });
                        }
                    }
                    s = piece_end;
                }
            }
            if let Some(j) = cur.take() {
                self.pending.push_back(j);
            }
            self.pos = start + len;
        }
        Ok(())
    }

    /// Up to `n` next jobs; empty when the disk is done.
    fn next_batch(&mut self, n: usize) -> Result<Vec<Job>> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            if self.pending.is_empty() {
                self.refill()?;
                if self.pending.is_empty() {
                    break;
                }
            }
            // A chunk may straddle two map windows only if the window is not a
            // multiple of the chunk; windows are, so jobs never repeat.
            out.push(self.pending.pop_front().expect("non-empty"));
        }
        Ok(out)
    }
}

/// A map must cover exactly the range asked, in order: readers are checked, not trusted.
fn check_map(map: &[v2x_formats::Extent], start: u64, len: u64) -> Result<()> {
    let mut pos = start;
    for e in map {
        if e.start != pos || e.len == 0 {
            return Err(Error::invalid(format!(
                "reader returned a broken allocation map at {pos:#x} (extent {:#x}+{:#x})",
                e.start, e.len
            )));
        }
        pos = e.end();
    }
    if pos != start + len {
        return Err(Error::invalid(format!(
            "reader's allocation map ends at {pos:#x}, not {:#x}",
            start + len
        )));
    }
    Ok(())
}

/// Chunk buffers handed back by the writer thread for reuse: a fresh
/// multi-MiB allocation costs a page fault per 4 KiB, which showed up as a
/// quarter of an uncompressed copy's time.
#[derive(Default)]
struct BufferPool {
    free: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl BufferPool {
    fn take(&self, len: usize) -> Vec<u8> {
        let reused = self.free.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match reused {
            Some(mut b) => {
                b.resize(len, 0);
                b
            }
            None => vec![0u8; len],
        }
    }

    fn give(&self, buf: Vec<u8>) {
        self.free.lock().unwrap_or_else(|p| p.into_inner()).push(buf);
    }
}

fn run_job(
    src: &dyn BlockSource,
    enc: &dyn ChunkEncoder,
    pool: &BufferPool,
    job: &Job,
) -> Result<EncodedChunk> {
    let mut buf = pool.take(job.len as usize);
    // Zero what the map says is not data (a reused buffer holds old bytes), read the rest.
    let mut pos = 0usize;
    for &(s, l) in &job.data {
        let (s, e) = (s as usize, (s + l) as usize);
        buf[pos..s].fill(0);
        src.read_at(job.offset + s as u64, &mut buf[s..e])?;
        pos = e;
    }
    buf[pos..].fill(0);
    enc.encode(job.offset, buf)
}

/// Copies every data extent of `src` into `writer` and finishes it.
/// `progress` receives the guest offset up to which the copy is done.
pub fn copy(
    src: &dyn BlockSource,
    mut writer: Box<dyn ImageWriter>,
    opts: &CopyOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<CopyStats> {
    let cs = writer.cluster_size().max(1);
    let chunk = opts.chunk_size.max(cs).div_ceil(cs) * cs;
    let encoder = writer.encoder();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads.max(1))
        .thread_name(|i| format!("v2x-copy-{i}"))
        .build()
        .map_err(|e| Error::invalid(format!("starting worker threads: {e}")))?;
    let mut planner = Planner::new(src, chunk);
    let mut bytes_read = 0u64;
    let buffers = BufferPool::default();
    // Enough chunks per batch to keep every worker busy, but about
    // `batch` default-sized chunks' worth of bytes, whatever the cluster size.
    let batch =
        (opts.batch.max(1) as u64 * opts.chunk_size.max(1) / chunk).max(opts.threads.max(1) as u64) as usize;

    let (tx, rx) = sync_channel::<(Vec<EncodedChunk>, u64)>(1);
    let result = std::thread::scope(|scope| -> Result<()> {
        let writer_ref = &mut writer;
        let buffers = &buffers;
        let handle = scope.spawn(move || -> Result<()> {
            for (batch, done_to) in rx {
                for c in batch {
                    writer_ref.write_chunk(&c)?;
                    buffers.give(c.data);
                }
                progress(done_to);
            }
            Ok(())
        });
        let produce = (|| -> Result<()> {
            loop {
                if opts.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) {
                    return Err(interrupted());
                }
                let jobs = planner.next_batch(batch)?;
                if jobs.is_empty() {
                    break;
                }
                bytes_read += jobs.iter().flat_map(|j| j.data.iter()).map(|d| d.1).sum::<u64>();
                let done_to = jobs.last().map(|j| j.offset + j.len).unwrap_or(0);
                let encoded: Result<Vec<EncodedChunk>> = pool.install(|| {
                    jobs.par_iter()
                        .map(|j| run_job(src, encoder.as_ref(), buffers, j))
                        .collect()
                });
                if tx.send((encoded?, done_to)).is_err() {
                    // The writer stopped; its error is reported below.
                    break;
                }
            }
            Ok(())
        })();
        drop(tx);
        let written = handle
            .join()
            .map_err(|_| Error::invalid("writer thread panicked"))?;
        written.and(produce)
    });
    result?;
    progress(src.size());
    let output = writer.finish()?;
    Ok(CopyStats {
        bytes_read,
        bytes_skipped: planner.skipped,
        output,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use v2x_formats::block::{ExtentList, ImageInfo};
    use v2x_formats::sink::{ClusterData, PlainEncoder};
    use v2x_formats::Extent;

    /// An in-memory disk whose map is given explicitly.
    struct MemDisk {
        data: Vec<u8>,
        extents: Vec<(u64, u64, ExtentKind)>,
    }

    impl BlockSource for MemDisk {
        fn size(&self) -> u64 {
            self.data.len() as u64
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
            buf.copy_from_slice(&self.data[offset as usize..offset as usize + buf.len()]);
            Ok(())
        }
        fn map(&self, start: u64, len: u64) -> Result<Vec<Extent>> {
            let mut l = ExtentList::new();
            for &(s, n, k) in &self.extents {
                let a = s.max(start);
                let b = (s + n).min(start + len);
                if a < b {
                    l.push(a, b - a, k, 0);
                }
            }
            Ok(l.into_vec())
        }
        fn info(&self) -> ImageInfo {
            ImageInfo::default()
        }
    }

    /// Clusters a [`Recorder`] was given: (guest offset, bytes).
    type Written = Arc<Mutex<Vec<(u64, Vec<u8>)>>>;

    /// A writer that records what it is given.
    struct Recorder {
        cs: u64,
        out: Written,
        last: Option<u64>,
    }

    impl ImageWriter for Recorder {
        fn cluster_size(&self) -> u64 {
            self.cs
        }
        fn encoder(&self) -> Arc<dyn ChunkEncoder> {
            Arc::new(PlainEncoder {
                cluster_size: self.cs,
            })
        }
        fn write_chunk(&mut self, c: &EncodedChunk) -> Result<()> {
            assert!(self.last.is_none_or(|l| l < c.offset), "chunks out of order");
            self.last = Some(c.offset);
            for (i, k) in c.clusters.iter().enumerate() {
                if *k == ClusterData::Plain {
                    let off = c.offset + i as u64 * self.cs;
                    self.out
                        .lock()
                        .unwrap()
                        .push((off, c.cluster_bytes(i, self.cs).to_vec()));
                }
            }
            Ok(())
        }
        fn finish(self: Box<Self>) -> Result<WriteSummary> {
            Ok(WriteSummary::default())
        }
    }

    #[test]
    fn copies_only_data_in_order() {
        let size = 10 * 4096 + 100;
        let mut data = vec![0u8; size];
        for (i, b) in data.iter_mut().enumerate() {
            *b = (i % 251) as u8 | 1;
        }
        // Bytes claimed as holes must not be read: poison them in the source.
        let disk = MemDisk {
            data: data.clone(),
            extents: vec![
                (0, 4096, ExtentKind::Data),
                (4096, 3 * 4096, ExtentKind::Unallocated),
                (4 * 4096, 2 * 4096 + 10, ExtentKind::Data),
                (6 * 4096 + 10, 4 * 4096 - 10, ExtentKind::Zero),
                (10 * 4096, 100, ExtentKind::Data),
            ],
        };
        let out = Arc::new(Mutex::new(Vec::new()));
        let w = Box::new(Recorder {
            cs: 4096,
            out: out.clone(),
            last: None,
        });
        let opts = CopyOptions {
            threads: 3,
            chunk_size: 8192,
            batch: 2,
            cancel: None,
        };
        let stats = copy(&disk, w, &opts, &|_| {}).unwrap();
        assert_eq!(stats.bytes_read, 4096 + 2 * 4096 + 10 + 100);
        let got = out.lock().unwrap().clone();
        let offs: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert_eq!(offs, vec![0, 4 * 4096, 5 * 4096, 6 * 4096, 10 * 4096]);
        // The cluster at 6*4096 holds 10 data bytes then zeros (the zero extent is not read).
        assert_eq!(&got[3].1[..10], &data[6 * 4096..6 * 4096 + 10]);
        assert!(got[3].1[10..].iter().all(|b| *b == 0));
        assert_eq!(got[4].1, data[10 * 4096..].to_vec());
    }

    #[test]
    fn cancelled_copy_stops_with_interrupted() {
        let disk = MemDisk {
            data: vec![1u8; 8192],
            extents: vec![(0, 8192, ExtentKind::Data)],
        };
        let w = Box::new(Recorder {
            cs: 4096,
            out: Default::default(),
            last: None,
        });
        let opts = CopyOptions {
            cancel: Some(Arc::new(AtomicBool::new(true))),
            ..CopyOptions::default()
        };
        match copy(&disk, w, &opts, &|_| {}).unwrap_err() {
            Error::Io { source, .. } => assert_eq!(source.kind(), std::io::ErrorKind::Interrupted),
            e => panic!("{e}"),
        }
    }

    #[test]
    fn broken_map_is_an_error() {
        let disk = MemDisk {
            data: vec![1u8; 8192],
            extents: vec![(0, 4096, ExtentKind::Data)],
        };
        let w = Box::new(Recorder {
            cs: 4096,
            out: Default::default(),
            last: None,
        });
        let err = copy(&disk, w, &CopyOptions::default(), &|_| {}).unwrap_err();
        assert!(err.to_string().contains("allocation map"), "{err}");
    }
}
