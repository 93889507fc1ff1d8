//! `v2x batch MANIFEST.toml`: many conversions from one manifest, `--jobs`
//! at a time. Each `[[vm]]` table becomes the arguments of one `v2x convert`
//! (checked by the same clap definitions), so every convert option works in a
//! manifest and means the same. A VM that fails is reported and the others go on.

use crate::cli::{BatchArgs, ConvertArgs};
use crate::exit;
use crate::pipeline::run_convert;
use crate::report::Mode;
use anyhow::{Context, Result};
use clap::Parser;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;
use toml::{Table, Value};

/// Largest manifest read.
pub const MAX_MANIFEST_BYTES: u64 = 16 << 20;
/// Most VMs in one manifest.
pub const MAX_VMS: usize = 100_000;

/// Keys a manifest entry may not set: they belong to the batch run itself.
const BATCH_ONLY: &[&str] = &["json", "quiet", "progress", "print-source", "help", "version"];

/// One `[[vm]]` of the manifest, parsed as `convert` arguments.
#[derive(Debug, Parser)]
#[command(name = "manifest entry", no_binary_name = true, disable_help_flag = true)]
struct EntryArgs {
    #[command(flatten)]
    args: ConvertArgs,
}

/// One VM to convert: its label and its arguments (or why they are wrong).
#[derive(Debug)]
pub struct Entry {
    /// The VM's `name`, else its `source`: what events and the summary show.
    pub label: String,
    /// The `convert` arguments, or the error that makes this entry fail.
    pub args: std::result::Result<ConvertArgs, String>,
}

/// How one VM ended.
#[derive(Debug, Clone)]
struct Outcome {
    code: u8,
    seconds: f64,
    output: Option<PathBuf>,
    error: Option<String>,
}

/// Reads a manifest into entries. Paths in it are relative to its directory.
pub fn load(path: &Path) -> Result<Vec<Entry>> {
    let bytes = crate::vm::ovf::read_capped(path, "batch manifest size", MAX_MANIFEST_BYTES)?;
    let text = String::from_utf8(bytes).map_err(|e| {
        v2x_formats::Error::io(
            format!("reading {}", path.display()),
            std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        )
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    parse(&text, &base).with_context(|| format!("in the manifest {}", path.display()))
}

/// Parses manifest text; relative paths are joined to `base`.
pub fn parse(text: &str, base: &Path) -> Result<Vec<Entry>> {
    let doc: Table = toml::from_str(text).map_err(|e| v2x_formats::Error::invalid(e.to_string()))?;
    for key in doc.keys() {
        if key != "vm" && key != "defaults" {
            return Err(v2x_formats::Error::invalid(format!(
                "unknown top-level key {key:?} (expected [defaults] and [[vm]])"
            ))
            .into());
        }
    }
    let empty = Table::new();
    let defaults = match doc.get("defaults") {
        None => &empty,
        Some(Value::Table(t)) => t,
        Some(_) => return Err(v2x_formats::Error::invalid("[defaults] must be a table").into()),
    };
    let vms = match doc.get("vm") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        _ => return Err(v2x_formats::Error::invalid("the manifest lists no [[vm]] tables").into()),
    };
    v2x_formats::error::check_limit("VMs in a batch manifest", vms.len() as u64, MAX_VMS as u64)?;
    Ok(vms
        .iter()
        .enumerate()
        .map(|(i, v)| entry(i, v, defaults, base))
        .collect())
}

/// Builds the entry of `[[vm]]` number `i`.
fn entry(i: usize, v: &Value, defaults: &Table, base: &Path) -> Entry {
    let fallback = format!("vm[{i}]");
    let Value::Table(t) = v else {
        return Entry {
            label: fallback,
            args: Err("a [[vm]] entry must be a table".into()),
        };
    };
    let label = ["name", "source"]
        .iter()
        .find_map(|k| t.get(*k).and_then(Value::as_str))
        .map(str::to_string)
        .unwrap_or(fallback);
    let args = argv(t, defaults, base).and_then(|argv| {
        EntryArgs::try_parse_from(argv)
            .map(|e| e.args)
            .map_err(|e| e.render().to_string().trim().to_string())
    });
    Entry { label, args }
}

/// The `convert` command line an entry stands for: defaults first, then the
/// entry's own keys, which override them.
fn argv(t: &Table, defaults: &Table, base: &Path) -> std::result::Result<Vec<String>, String> {
    let mut merged = defaults.clone();
    for (k, v) in t {
        merged.insert(k.clone(), v.clone());
    }
    let path_of = |key: &str| -> std::result::Result<Option<String>, String> {
        match merged.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(base.join(s).display().to_string())),
            Some(_) => Err(format!("{key} must be a string")),
        }
    };
    let source = path_of("source")?.ok_or("the entry has no source")?;
    let mut out = vec![source];
    if let Some(o) = path_of("output")? {
        out.push(o);
    }
    for (k, v) in &merged {
        if k == "source" || k == "output" {
            continue;
        }
        if BATCH_ONLY.contains(&k.as_str()) {
            return Err(format!("{k} is an option of the batch run, not of one VM"));
        }
        if k.is_empty()
            || !k
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(format!(
                "{k:?} is not an option name (use convert's long options, like output-format)"
            ));
        }
        let scalar = |v: &Value| -> std::result::Result<String, String> {
            match v {
                Value::String(s) => Ok(s.clone()),
                Value::Integer(n) => Ok(n.to_string()),
                _ => Err(format!(
                    "{k} must be a string, an integer, true, or a list of those"
                )),
            }
        };
        match v {
            Value::Boolean(true) => out.push(format!("--{k}")),
            Value::Boolean(false) => {}
            Value::Array(items) => {
                for item in items {
                    out.push(format!("--{k}={}", scalar(item)?));
                }
            }
            other => out.push(format!("--{k}={}", scalar(other)?)),
        }
    }
    Ok(out)
}

/// `v2x batch`: returns 0 when every VM converted, else the exit status of
/// the first failed VM in manifest order.
pub fn run(args: &BatchArgs) -> Result<u8> {
    let entries = load(&args.manifest)?;
    let mode = if args.json {
        Mode::Json
    } else if args.quiet {
        Mode::Quiet
    } else {
        Mode::Human { progress: false }
    };
    let outcomes: Mutex<Vec<Option<Outcome>>> = Mutex::new(vec![None; entries.len()]);
    let next = AtomicUsize::new(0);
    let interrupted = exit::interrupt_flag();
    let workers = args.jobs.clamp(1, entries.len());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(e) = entries.get(i) else { break };
                let outcome = if interrupted.load(Ordering::Relaxed) {
                    Outcome {
                        code: exit::INTERRUPTED,
                        seconds: 0.0,
                        output: None,
                        error: Some("not started: interrupted".into()),
                    }
                } else {
                    convert_one(e, mode)
                };
                outcomes.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(outcome);
            });
        }
    });
    let outcomes: Vec<Outcome> = outcomes
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .map(|o| {
            o.unwrap_or(Outcome {
                code: exit::OTHER,
                seconds: 0.0,
                output: None,
                error: Some("not run".into()),
            })
        })
        .collect();
    summarize(&entries, &outcomes, mode);
    Ok(outcomes
        .iter()
        .map(|o| o.code)
        .find(|c| *c != exit::OK)
        .unwrap_or(exit::OK))
}

/// Converts one entry, turning any error into its outcome.
fn convert_one(e: &Entry, mode: Mode) -> Outcome {
    let start = Instant::now();
    let result = match &e.args {
        Ok(a) => {
            run_convert(a, mode, Some(&e.label)).map_err(|err| (exit::code_for(&err), format!("{err:#}")))
        }
        Err(msg) => {
            if mode == Mode::Json {
                crate::report::Reporter::tagged(mode, 0, Some(e.label.clone()))
                    .event("error", json!({"kind": "invalid", "message": msg}));
            }
            Err((exit::USAGE, msg.clone()))
        }
    };
    let (code, error) = match result {
        Ok(c) => (c, None),
        Err((c, msg)) => {
            if let Mode::Human { .. } = mode {
                eprintln!("[{}] v2x: error: {msg}", e.label);
            }
            (c, Some(msg))
        }
    };
    Outcome {
        code,
        seconds: start.elapsed().as_secs_f64(),
        output: e.args.as_ref().ok().and_then(|a| a.output.clone()),
        error,
    }
}

/// Prints the summary: a table for people (also in quiet mode), one event in JSON.
fn summarize(entries: &[Entry], outcomes: &[Outcome], mode: Mode) {
    let ok = outcomes.iter().filter(|o| o.code == exit::OK).count();
    let failed = outcomes.len() - ok;
    if mode == Mode::Json {
        let vms: Vec<_> = entries
            .iter()
            .zip(outcomes)
            .map(|(e, o)| {
                json!({
                    "vm": e.label, "status": if o.code == exit::OK { "ok" } else { "failed" },
                    "exit": o.code, "seconds": o.seconds, "output": o.output, "error": o.error,
                })
            })
            .collect();
        println!(
            "{}",
            json!({"event": "summary", "vms": vms, "ok": ok, "failed": failed})
        );
        return;
    }
    let width = entries
        .iter()
        .map(|e| e.label.len())
        .max()
        .unwrap_or(2)
        .clamp(2, 40);
    let mut text = format!("\n{:<width$}  STATUS  EXIT  SECONDS  OUTPUT / ERROR\n", "VM");
    for (e, o) in entries.iter().zip(outcomes) {
        let what = match &o.error {
            Some(err) => err.lines().next().unwrap_or_default().to_string(),
            None => o
                .output
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        };
        text.push_str(&format!(
            "{:<width$}  {:<6}  {:>4}  {:>7.1}  {what}\n",
            e.label,
            if o.code == exit::OK { "ok" } else { "failed" },
            o.code,
            o.seconds
        ));
    }
    text.push_str(&format!("{ok} converted, {failed} failed\n"));
    print!("{text}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_become_convert_arguments() {
        let m = r#"
            [defaults]
            target = "local"
            output-format = "qcow2"
            network = ["VM Network:default"]
            [[vm]]
            source = "a.ova"
            output = "out/a"
            [[vm]]
            name = "b"
            source = "/abs/b.vmx"
            output = "out/b"
            target = "qemu"
            force = true
            no-convert = false
            threads = 2
            [[vm]]
            source = "c.ova"
            bogus-option = 1
            [[vm]]
            source = "d.ova"
            json = true
        "#;
        let e = parse(m, Path::new("/m")).unwrap();
        assert_eq!(e.len(), 4);
        let a = e[0].args.as_ref().unwrap();
        assert_eq!(e[0].label, "a.ova");
        assert_eq!(a.input, PathBuf::from("/m/a.ova"));
        assert_eq!(a.output, Some(PathBuf::from("/m/out/a")));
        assert_eq!(a.target, Some(crate::cli::TargetArg::Local));
        assert_eq!(a.network, vec!["VM Network:default".to_string()]);
        let b = e[1].args.as_ref().unwrap();
        assert_eq!(e[1].label, "b");
        assert_eq!(b.input, PathBuf::from("/abs/b.vmx"));
        assert_eq!(b.target, Some(crate::cli::TargetArg::Qemu));
        assert!(b.force && !b.no_convert);
        assert_eq!(b.threads, Some(2));
        assert!(e[2].args.as_ref().unwrap_err().contains("bogus-option"));
        assert!(e[3].args.as_ref().unwrap_err().contains("batch run"));
    }

    #[test]
    fn broken_manifests() {
        for m in [
            "",
            "[[vm]]\n",
            "x = 1\n[[vm]]\nsource='a'",
            "vm = 3",
            "[defaults]\n",
        ] {
            let r = parse(m, Path::new("."));
            let ok_entries = r
                .as_ref()
                .map(|e| e.iter().all(|x| x.args.is_ok()))
                .unwrap_or(false);
            assert!(!ok_entries, "{m:?} should not give runnable entries");
        }
    }
}
