//! The stages of `v2x convert` and the other subcommands, as a short list of
//! calls: open → (volumes → filesystems → inspect → plan → apply: later
//! stages) → copy → finalize.

use crate::cli::{CompareArgs, ConvertArgs, InfoArgs, InspectArgs, OutputFormatArg};
use crate::compare::{compare, Verdict};
use crate::convert::guest::{self, Prepared};
use crate::copy::{copy, CopyOptions, CopyStats};
use crate::exit::{self, Refused};
use crate::guest::inspect::Disk;
use crate::options::{open_source, write_options};
use crate::report::{human_bytes, Mode, Reporter};
use anyhow::{Context, Result};
use serde_json::json;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use v2x_formats::block::{BlockSource, ExtentKind, ImageInfo};
use v2x_formats::{create_writer, OutputFormat};

/// `v2x convert`: returns the process exit code.
pub fn convert(args: &ConvertArgs) -> Result<u8> {
    run_convert(args, mode_of(args), None)
}

/// How `args` asks to report.
pub fn mode_of(args: &ConvertArgs) -> Mode {
    if args.json {
        Mode::Json
    } else if args.quiet {
        Mode::Quiet
    } else {
        Mode::Human {
            progress: args.progress,
        }
    }
}

/// One conversion, reported in `mode`; `tag` labels its events in batch runs.
/// A disk source without `--target` becomes one image; anything else is a
/// whole VM (see [`crate::machine`]).
pub fn run_convert(args: &ConvertArgs, mode: Mode, tag: Option<&str>) -> Result<u8> {
    let result = if args.print_source {
        crate::machine::print_source(args)
    } else {
        match crate::machine::vm_target(args) {
            Ok(Some(target)) => crate::machine::convert_vm(args, target, mode, tag),
            Ok(None) => match &args.output {
                Some(out) => convert_disk(args, out, mode, tag),
                None => Err(v2x_formats::Error::invalid("convert needs an OUTPUT").into()),
            },
            Err(e) => Err(e),
        }
    };
    if let (Err(e), Mode::Json) = (&result, mode) {
        Reporter::tagged(mode, 0, tag.map(str::to_string)).event(
            "error",
            json!({"kind": exit::kind_for(e), "message": format!("{e:#}")}),
        );
    }
    result
}

/// One disk image in, one disk image out.
fn convert_disk(args: &ConvertArgs, output: &Path, mode: Mode, tag: Option<&str>) -> Result<u8> {
    // Stage: open. The source is only ever opened read-only.
    let src: Arc<dyn BlockSource> = Arc::from(open_source(&args.input, &args.source, args.source_format)?);
    let info = src.info();
    let out_format = output_format(args, Some(output));
    let wopts = write_options(&args.options, args.compress)?;
    if !args.dry_run {
        check_output(&args.input, output, args.force)?;
    }

    let reporter = Reporter::tagged(mode, src.size(), tag.map(str::to_string));
    reporter.event(
        "start",
        json!({
            "input": args.input, "input_format": info.format, "output": output,
            "output_format": out_format.name(), "virtual_size": src.size(),
            "dry_run": args.dry_run, "convert": !args.no_convert,
        }),
    );
    for note in &info.notes {
        reporter.warn(note);
    }

    // Stages: volumes → filesystems → inspect → plan → apply, on an overlay.
    let src = if args.no_convert {
        src
    } else {
        let disks = vec![Disk {
            path: args.input.display().to_string(),
            format: info.format.clone(),
            source: src,
        }];
        let Some(prepared) = prepare_and_apply(args, disks, &reporter, mode)? else {
            return Ok(exit::OK);
        };
        prepared.overlays[0].clone() as Arc<dyn BlockSource>
    };

    // Stages: copy into a temporary file beside the output, then finalize.
    let stats = copy_to(src.as_ref(), output, out_format, &wopts, args, None, &|d| {
        reporter.progress(d)
    })
    .with_context(|| format!("converting {} to {}", args.input.display(), output.display()))?;
    reporter.finish();
    report_done(&reporter, args, output, &info, out_format, &stats);
    Ok(exit::OK)
}

/// The guest stages over `disks`: inspect, plan, report the plan, and (unless
/// `--dry-run`, which prints the plan and returns None) apply it to overlays.
pub(crate) fn prepare_and_apply(
    args: &ConvertArgs,
    disks: Vec<Disk>,
    reporter: &Reporter,
    mode: Mode,
) -> Result<Option<Prepared>> {
    let prepared = guest::prepare(disks, &args.root)
        .context("inspecting the guest (--no-convert copies the disks without guest changes)")?;
    report_plan(reporter, &prepared);
    if args.dry_run {
        if mode != Mode::Json {
            print_out(&prepared.plan.render())?;
        }
        return Ok(None);
    }
    let applied = guest::apply(&prepared).context(
        "converting the guest; nothing was written (--no-convert copies the disks without guest changes)",
    )?;
    for (id, n) in &applied.steps {
        reporter.event("step", json!({"id": id, "edits": n}));
    }
    if !applied.steps.is_empty() {
        let edited: u64 = prepared.overlays.iter().map(|o| o.edited_blocks() as u64).sum();
        reporter.say(&format!(
            "guest converted: {} edits in {} steps ({} of disk blocks changed)",
            prepared.plan.edit_count(),
            applied.steps.len(),
            human_bytes(edited * crate::overlay::BLOCK)
        ));
    }
    Ok(Some(prepared))
}

/// The copy and finalize stages for one disk: `src` is written in
/// `out_format` to a temporary file beside `output`, renamed when complete.
/// `threads` overrides `-j` (a VM's disks share the CPUs).
pub(crate) fn copy_to(
    src: &dyn BlockSource,
    output: &Path,
    out_format: OutputFormat,
    wopts: &v2x_formats::WriteOptions,
    args: &ConvertArgs,
    threads: Option<usize>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<CopyStats> {
    let tmp = temp_output(output)?;
    let file = tmp.as_file().try_clone().context("duplicating output handle")?;
    let writer = create_writer(out_format, file, src.size(), wopts)
        .with_context(|| format!("creating {} output", out_format.name()))?;
    let mut copts = CopyOptions {
        cancel: Some(crate::exit::interrupt_flag()),
        ..CopyOptions::default()
    };
    if let Some(t) = threads.or(args.threads) {
        copts.threads = t.max(1);
    }
    let stats = copy(src, writer, &copts, progress)?;
    // Only a complete image ever gets the final name.
    finalize(tmp, output, args.force, args.sync)?;
    Ok(stats)
}

/// Reports the chosen root and the plan: a JSON `plan` event, or a short
/// human summary (the full plan with diffs is `--dry-run`'s output).
pub(crate) fn report_plan(r: &Reporter, p: &Prepared) {
    for n in &p.notes {
        r.warn(n);
    }
    let root = p.root.as_ref().map(|root| {
        json!({
            "volume": root.volume, "os_type": root.os_type, "distro": root.distro,
            "version": root.version, "product_name": root.product_name,
            "firmware": root.firmware,
        })
    });
    r.event("plan", json!({"root": root, "steps": p.plan.steps}));
    if let Some(root) = &p.root {
        let name = root
            .product_name
            .clone()
            .or_else(|| {
                root.distro
                    .clone()
                    .map(|d| format!("{d} {}", root.version.clone().unwrap_or_default()))
            })
            .unwrap_or_else(|| root.os_type.clone());
        r.say(&format!(
            "guest: {} on {} ({})",
            name.trim(),
            root.volume,
            root.firmware
        ));
    }
    for step in &p.plan.steps {
        r.say(&format!(
            "  {}: {} ({} edits)",
            step.id,
            step.summary,
            step.edits.len()
        ));
        for n in &step.notes {
            r.say(&format!("    {n}"));
        }
    }
}

/// The output format: `-O`, else `output`'s extension, else qcow2.
pub(crate) fn output_format(args: &ConvertArgs, output: Option<&Path>) -> OutputFormat {
    match args.output_format {
        Some(OutputFormatArg::Raw) => OutputFormat::Raw,
        Some(OutputFormatArg::Qcow2) => OutputFormat::Qcow2,
        Some(OutputFormatArg::Vpc) => OutputFormat::Vhd,
        Some(OutputFormatArg::Vhdx) => OutputFormat::Vhdx,
        Some(OutputFormatArg::Vmdk) => OutputFormat::Vmdk,
        None => output
            .and_then(OutputFormat::from_extension)
            .unwrap_or(OutputFormat::Qcow2),
    }
}

/// Refuses to clobber an existing output (without --force) or the input itself.
pub(crate) fn check_output(input: &Path, output: &Path, force: bool) -> Result<()> {
    if let (Ok(a), Ok(b)) = (input.canonicalize(), output.canonicalize()) {
        if a == b {
            return Err(Refused(format!("output {} is the input image", output.display())).into());
        }
    }
    if output.symlink_metadata().is_ok() && !force {
        return Err(Refused(format!(
            "output {} exists (use --force to replace it)",
            output.display()
        ))
        .into());
    }
    Ok(())
}

fn out_dir(output: &Path) -> PathBuf {
    match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Creates `OUTPUT.tmp-XXXXXX` in the output's directory; removed on drop.
fn temp_output(output: &Path) -> Result<tempfile::NamedTempFile> {
    let name = output
        .file_name()
        .with_context(|| format!("output {} has no file name", output.display()))?;
    let mut prefix = name.to_os_string();
    prefix.push(".tmp-");
    let tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(out_dir(output))
        .with_context(|| format!("creating a temporary file beside {}", output.display()))?;
    Ok(tmp)
}

/// Renames the finished temporary file to its final name; with `sync`, makes
/// the data and the rename durable.
fn finalize(tmp: tempfile::NamedTempFile, output: &Path, force: bool, sync: bool) -> Result<()> {
    if sync {
        tmp.as_file()
            .sync_all()
            .with_context(|| format!("flushing {}", output.display()))?;
    }
    if force {
        tmp.persist(output).map_err(|e| e.error)
    } else {
        tmp.persist_noclobber(output).map_err(|e| e.error)
    }
    .with_context(|| format!("renaming the finished image to {}", output.display()))?;
    if sync {
        File::open(out_dir(output))
            .and_then(|dir| dir.sync_all())
            .with_context(|| format!("flushing the directory of {}", output.display()))?;
    }
    Ok(())
}

fn report_done(
    r: &Reporter,
    args: &ConvertArgs,
    output: &Path,
    info: &ImageInfo,
    fmt: OutputFormat,
    s: &CopyStats,
) {
    let secs = r.elapsed();
    let rate = if secs > 0.0 {
        s.bytes_read as f64 / secs
    } else {
        0.0
    };
    r.event(
        "done",
        json!({
            "output": output, "seconds": secs, "bytes_read": s.bytes_read,
            "bytes_skipped": s.bytes_skipped, "data_bytes": s.output.data_bytes,
            "file_size": s.output.file_size, "virtual_size": s.output.virtual_size,
            "notes": s.output.notes,
        }),
    );
    for n in &s.output.notes {
        r.warn(n);
    }
    r.say(&format!(
        "{} ({}, {}) -> {} ({}): {} read, {} stored, in {:.2} s ({}/s)",
        args.input.display(),
        info.format,
        human_bytes(info.virtual_size),
        output.display(),
        fmt.name(),
        human_bytes(s.bytes_read),
        human_bytes(s.output.file_size),
        secs,
        human_bytes(rate as u64),
    ));
}

/// `v2x info`.
pub fn info(args: &InfoArgs) -> Result<u8> {
    let src = open_source(&args.image, &args.source, args.format)?;
    let info = src.info();
    let alloc = if args.map {
        Some(allocation(src.as_ref())?)
    } else {
        None
    };
    if args.json {
        let mut v = serde_json::to_value(&info)?;
        if let (Some(a), serde_json::Value::Object(m)) = (&alloc, &mut v) {
            m.insert("allocation".into(), serde_json::to_value(a)?);
        }
        print_out(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
    } else {
        let mut text = String::new();
        format_info(&mut text, &info, 0);
        if let Some(a) = alloc {
            text += &format!(
                "allocation: data {}, zero {}, unallocated {}\n",
                a.data, a.zero, a.unallocated
            );
        }
        print_out(&text)?;
    }
    Ok(exit::OK)
}

/// `v2x inspect`: opens every disk, runs inspection, prints the report.
pub fn inspect_cmd(args: &InspectArgs) -> Result<u8> {
    let mut disks = Vec::with_capacity(args.images.len());
    for path in &args.images {
        let src = open_source(path, &args.source, args.format)?;
        disks.push(Disk {
            path: path.display().to_string(),
            format: src.info().format,
            source: std::sync::Arc::from(src),
        });
    }
    let report = crate::guest::inspect::inspect(disks).context("inspecting the guest")?;
    if args.json {
        print_out(&format!("{}\n", serde_json::to_string_pretty(&report)?))?;
    } else {
        print_out(&crate::guest::inspect::report::render(&report))?;
    }
    Ok(exit::OK)
}

/// Bytes per extent kind over the whole disk.
#[derive(Debug, Default, serde::Serialize)]
struct Allocation {
    data: u64,
    zero: u64,
    unallocated: u64,
}

fn allocation(src: &dyn BlockSource) -> Result<Allocation> {
    let mut a = Allocation::default();
    let mut pos = 0;
    while pos < src.size() {
        let len = (1u64 << 30).min(src.size() - pos);
        for e in src.map(pos, len)? {
            match e.kind {
                ExtentKind::Data => a.data += e.len,
                ExtentKind::Zero => a.zero += e.len,
                ExtentKind::Unallocated => a.unallocated += e.len,
            }
        }
        pos += len;
    }
    Ok(a)
}

/// Writes to standard output, returning errors (a closed pipe) instead of panicking.
pub(crate) fn print_out(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

fn format_info(out: &mut String, i: &ImageInfo, depth: usize) {
    use std::fmt::Write;
    let pad = "  ".repeat(depth);
    let _ = writeln!(out, "{pad}image: {}", i.path);
    let _ = writeln!(out, "{pad}file format: {}", i.format);
    if let Some(s) = &i.subformat {
        let _ = writeln!(out, "{pad}subformat: {s}");
    }
    let _ = writeln!(
        out,
        "{pad}virtual size: {} ({} bytes)",
        human_bytes(i.virtual_size),
        i.virtual_size
    );
    if let Some(f) = i.file_size {
        let _ = writeln!(out, "{pad}file size: {} ({} bytes)", human_bytes(f), f);
    }
    if let Some(c) = i.cluster_size {
        let _ = writeln!(out, "{pad}cluster size: {c}");
    }
    for (k, v) in &i.details {
        let _ = writeln!(out, "{pad}{k}: {v}");
    }
    for n in &i.notes {
        let _ = writeln!(out, "{pad}note: {n}");
    }
    if let Some(b) = &i.backing {
        let _ = writeln!(out, "{pad}backing image:");
        format_info(out, b, depth + 1);
    }
}

/// `v2x compare`.
pub fn compare_cmd(args: &CompareArgs) -> Result<u8> {
    let a = open_source(&args.a, &args.source, args.format_a)?;
    let b = open_source(&args.b, &args.source, args.format_b)?;
    let verdict = compare(a.as_ref(), b.as_ref(), args.strict, &|_| {})
        .with_context(|| format!("comparing {} and {}", args.a.display(), args.b.display()))?;
    let (msg, code) = match verdict {
        Verdict::Identical => ("Images are identical.".to_string(), exit::OK),
        Verdict::ContentMismatch(off) => (format!("Content mismatch at offset {off}!"), exit::DIFFERENT),
        Verdict::SizeMismatch(x, y) => (
            format!("Image size mismatch! ({x} vs {y} bytes)"),
            exit::DIFFERENT,
        ),
    };
    if !args.quiet {
        print_out(&format!("{msg}\n"))?;
    }
    Ok(code)
}
