//! Telling the user what happens: quiet, human (with an optional progress
//! bar), or one JSON event per line.

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How output is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Errors only.
    Quiet,
    /// Human text; `progress` adds a bar or progress lines.
    Human {
        /// Show progress.
        progress: bool,
    },
    /// JSON events on standard output.
    Json,
}

/// Emits progress and events for one operation. Safe to call from the writer thread.
pub struct Reporter {
    mode: Mode,
    total: u64,
    bar: Option<ProgressBar>,
    last: Mutex<Option<Instant>>,
    started: Instant,
    /// Set in batch runs: the VM's label, added to every JSON event as "vm"
    /// and put before every human line.
    tag: Option<String>,
}

const TICK: Duration = Duration::from_millis(500);

impl Reporter {
    /// A reporter for an operation over `total` guest bytes.
    pub fn new(mode: Mode, total: u64) -> Self {
        Self::tagged(mode, total, None)
    }

    /// A reporter whose events and lines carry `tag` (a batch run's VM label).
    pub fn tagged(mode: Mode, total: u64, tag: Option<String>) -> Self {
        let bar = match mode {
            Mode::Human { progress: true } if tag.is_none() && std::io::stderr().is_terminal() => {
                let b = ProgressBar::new(total);
                b.set_style(
                    ProgressStyle::with_template(
                        "{spinner} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
                    )
                    .expect("static template")
                    .progress_chars("=> "),
                );
                Some(b)
            }
            _ => None,
        };
        Reporter {
            mode,
            total,
            bar,
            last: Mutex::new(None),
            started: Instant::now(),
            tag,
        }
    }

    /// Seconds since the reporter was made.
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Prints a JSON event (in JSON mode only).
    pub fn event(&self, event: &str, mut fields: Value) {
        if self.mode != Mode::Json {
            return;
        }
        if let Value::Object(m) = &mut fields {
            m.insert("event".into(), Value::String(event.into()));
            if let Some(t) = &self.tag {
                m.insert("vm".into(), Value::String(t.clone()));
            }
        }
        let mut out = std::io::stdout().lock();
        // A closed pipe is not our error; the caller's exit path handles it.
        let _ = writeln!(out, "{fields}");
        let _ = out.flush();
    }

    /// Records that the operation has reached guest offset `done`.
    pub fn progress(&self, done: u64) {
        if let Some(b) = &self.bar {
            b.set_position(done);
            return;
        }
        let due = {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let due = last.is_none_or(|t| now.duration_since(t) >= TICK) || done >= self.total;
            if due {
                *last = Some(now);
            }
            due
        };
        if !due {
            return;
        }
        let pct = if self.total == 0 {
            100.0
        } else {
            done as f64 * 100.0 / self.total as f64
        };
        match self.mode {
            Mode::Json => self.event(
                "progress",
                json!({"done": done, "total": self.total, "percent": (pct * 10.0).round() / 10.0}),
            ),
            Mode::Human { progress: true } => {
                eprintln!(
                    "{}progress: {pct:.1}% ({done}/{} bytes)",
                    self.prefix(),
                    self.total
                )
            }
            _ => {}
        }
    }

    /// Removes the bar before final output.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }

    /// Prints a line of human output on standard output (not in quiet or JSON mode).
    pub fn say(&self, line: &str) {
        if let Mode::Human { .. } = self.mode {
            match &self.tag {
                // One write per line, so lines of concurrent VMs do not interleave.
                Some(_) => {
                    let text: String = line.lines().map(|l| format!("{}{l}\n", self.prefix())).collect();
                    print!("{text}");
                }
                None => println!("{line}"),
            }
        }
    }

    /// "[tag] " in batch runs, else nothing.
    fn prefix(&self) -> String {
        self.tag.as_ref().map(|t| format!("[{t}] ")).unwrap_or_default()
    }

    /// Prints a warning on standard error (human mode) or as an event (JSON).
    pub fn warn(&self, msg: &str) {
        match self.mode {
            Mode::Json => self.event("warning", json!({"message": msg})),
            Mode::Human { .. } => eprintln!("{}v2x: warning: {msg}", self.prefix()),
            Mode::Quiet => {}
        }
    }
}

/// Formats a byte count for people ("1.5 GiB").
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
