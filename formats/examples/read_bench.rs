//! Measures read throughput of any image the way the copier reads it:
//! `THREADS` workers taking 1 MiB requests over the data extents of `map()`.
//!
//! Usage: `cargo run --release -p v2x-formats --example read_bench -- IMAGE [THREADS]`

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use v2x_formats::block::{BlockSource, ExtentKind};
use v2x_formats::open::{open_image, BackingPolicy, OpenOptions};

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: read_bench IMAGE [THREADS]");
    let threads: usize = args.next().map_or(4, |t| t.parse().expect("THREADS"));
    let opts = OpenOptions {
        backing: BackingPolicy::Any,
        ..OpenOptions::default()
    };
    let src = open_image(path.as_ref(), &opts).expect("open");
    let t0 = Instant::now();
    let map = src.map(0, src.size()).expect("map");
    let map_time = t0.elapsed();
    let mut jobs = Vec::new();
    for e in map.iter().filter(|e| e.kind == ExtentKind::Data) {
        let mut off = e.start;
        while off < e.end() {
            let n = (e.end() - off).min(1 << 20);
            jobs.push((off, n as usize));
            off += n;
        }
    }
    let next = AtomicUsize::new(0);
    let t1 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut buf = vec![0u8; 1 << 20];
                let mut sink = 0u8;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(off, n)) = jobs.get(i) else { break };
                    src.read_at(off, &mut buf[..n]).expect("read");
                    sink ^= buf[n - 1];
                }
                std::hint::black_box(sink);
            });
        }
    });
    let secs = t1.elapsed().as_secs_f64();
    let bytes: u64 = jobs.iter().map(|j| j.1 as u64).sum();
    println!(
        "{} extents mapped in {:?}; read {} MiB of data in {:.3} s with {threads} threads: {:.0} MiB/s",
        map.len(),
        map_time,
        bytes >> 20,
        secs,
        (bytes as f64 / (1 << 20) as f64) / secs
    );
}
