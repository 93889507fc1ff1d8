//! Whole-VM conversion, the stages of `v2x convert SRC OUTDIR --target T`:
//! read the VM description (OVA, OVF, VMX, or a plain disk with defaults) →
//! open every disk → the guest stages over all disks at once (inspection sees
//! root on disk 1 and /var on disk 2) → copy each disk to OUTDIR/NAME-sdX →
//! write the target's description of the VM.

use crate::cli::{BlockDriverArg, ConvertArgs, TargetArg};
use crate::exit::{self, Refused};
use crate::guest::inspect::Disk;
use crate::options::{open_source, write_options};
use crate::pipeline::{self, check_output, copy_to, output_format, prepare_and_apply};
use crate::report::{human_bytes, Mode, Reporter};
use crate::target::{self, BlockDriver, GuestInfo, OutDisk, OutputVm, TargetKind, TargetOptions};
use crate::vm::blank::BlankDisk;
use crate::vm::{self, DiskLocation, Firmware, VmSpec};
use anyhow::{Context, Result};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use v2x_formats::block::BlockSource;

/// The VM target `args` asks for: `--target`, else `local` for a VM
/// description (OVA, OVF, VMX), else None (a disk converts to one image).
pub fn vm_target(args: &ConvertArgs) -> Result<Option<TargetKind>> {
    if let Some(t) = args.target {
        return Ok(Some(target_kind(t)));
    }
    let kind = vm::detect(&args.input).with_context(|| format!("reading {}", args.input.display()))?;
    Ok((kind != vm::SourceKind::Disk).then_some(TargetKind::Local))
}

fn target_kind(t: TargetArg) -> TargetKind {
    match t {
        TargetArg::Local => TargetKind::Local,
        TargetArg::Qemu => TargetKind::Qemu,
        TargetArg::Kubevirt => TargetKind::Kubevirt,
        TargetArg::Openstack => TargetKind::Openstack,
        TargetArg::Null => TargetKind::Null,
    }
}

/// `convert --print-source`: the VM as its description states it, then exit.
/// Manifests are not checked here (that reads every disk); `convert` does.
pub fn print_source(args: &ConvertArgs) -> Result<u8> {
    let mut spec =
        vm::load(&args.input, false).with_context(|| format!("reading {}", args.input.display()))?;
    if let Some(n) = &args.name {
        spec.name = n.clone();
    }
    let text = if args.json {
        let mut j = serde_json::to_string_pretty(&spec).context("encoding the VM as JSON")?;
        j.push('\n');
        j
    } else {
        spec.render()
    };
    pipeline::print_out(&text)?;
    Ok(exit::OK)
}

/// Linux's name for disk `i` on SCSI/SATA: sda … sdz, sdaa, ….
pub fn disk_name(i: usize) -> String {
    format!("sd{}", target::disk_letters(i))
}

/// Splits `--network`/`--bridge` values: "IN:OUT", or "OUT" (the default).
fn mappings(values: &[String]) -> Vec<(String, String)> {
    values
        .iter()
        .map(|v| match v.split_once(':') {
            Some((a, b)) => (a.to_string(), b.to_string()),
            None => (String::new(), v.clone()),
        })
        .collect()
}

/// One disk of the VM, opened.
struct OpenDisk {
    label: String,
    format: String,
    source: Arc<dyn BlockSource>,
}

/// `v2x convert` of a whole VM into `target`.
pub fn convert_vm(args: &ConvertArgs, kind: TargetKind, mode: Mode, tag: Option<&str>) -> Result<u8> {
    // Stage: input. The description, then every disk, read-only.
    let mut spec = vm::load(&args.input, !args.no_verify_manifest)
        .with_context(|| format!("reading the VM description {}", args.input.display()))?;
    if let Some(n) = &args.name {
        spec.name = n.clone();
    }
    if spec.disks.is_empty() {
        return Err(v2x_formats::Error::invalid(format!(
            "{} describes a VM without disks",
            args.input.display()
        ))
        .into());
    }
    let out_format = output_format(args, None);
    let wopts = write_options(&args.options, args.compress)?;
    let topts = TargetOptions {
        block_driver: match args.block_driver {
            BlockDriverArg::VirtioBlk => BlockDriver::VirtioBlk,
            BlockDriverArg::VirtioScsi => BlockDriver::VirtioScsi,
        },
        networks: mappings(&args.network),
        bridges: mappings(&args.bridge),
    };
    // Everything the target writer will check (the name, vCPUs, memory, the
    // network options), checked before any disk is copied.
    target::validate(
        &OutputVm {
            name: spec.name.clone(),
            vcpus: spec.vcpus,
            memory_mib: spec.memory_mib,
            firmware: spec.firmware.unwrap_or(Firmware::Bios),
            disks: Vec::new(),
            nics: spec.nics.clone(),
            guest: None,
            source_os_type: spec.os_type.clone(),
        },
        &topts,
    )
    .context("the VM cannot be described for the target (--name sets another name)")?;

    // The output directory (a scratch one for --target null) and the files it will hold.
    let (outdir, _scratch): (PathBuf, Option<tempfile::TempDir>) = match (kind, &args.output) {
        (TargetKind::Null, out) => {
            // Scratch space: OUTPUT if it is a directory (same file system as a
            // real run), else the system's temporary directory.
            let base = out
                .clone()
                .filter(|o| o.is_dir())
                .unwrap_or_else(std::env::temp_dir);
            let dir = tempfile::Builder::new()
                .prefix(".v2x-null-")
                .tempdir_in(&base)
                .with_context(|| format!("creating a scratch directory in {}", base.display()))?;
            (dir.path().to_path_buf(), Some(dir))
        }
        (_, Some(out)) => (out.clone(), None),
        (_, None) => return Err(v2x_formats::Error::invalid("convert needs an OUTPUT directory").into()),
    };
    // A directory this run creates is removed again if the run fails before
    // anything is left in it.
    let mut created_dir = CreatedDir(None);
    let outputs: Vec<PathBuf> = (0..spec.disks.len())
        .map(|i| outdir.join(format!("{}-{}", spec.name, disk_name(i))))
        .collect();
    if !args.dry_run {
        if outdir.exists() && !outdir.is_dir() {
            return Err(Refused(format!(
                "output {} is not a directory (a VM target writes a directory)",
                outdir.display()
            ))
            .into());
        }
        if !outdir.exists() {
            created_dir.0 = Some(outdir.clone());
        }
        std::fs::create_dir_all(&outdir).with_context(|| format!("creating {}", outdir.display()))?;
        for o in &outputs {
            check_output(&args.input, o, args.force)?;
        }
        if let Some(f) = kind.description_file(&spec.name) {
            check_output(&args.input, &outdir.join(f), args.force)?;
        }
    }

    // Gzip-compressed OVA members are unpacked here, removed at the end.
    let unpack = if args.dry_run {
        std::env::temp_dir()
    } else {
        outdir.clone()
    };
    let disks = open_disks(args, &spec, &unpack)?;
    let total: u64 = disks.iter().map(|d| d.source.size()).sum();
    let reporter = Reporter::tagged(mode, total, tag.map(str::to_string));
    reporter.event(
        "start",
        json!({
            "input": args.input, "source_kind": spec.source_kind, "name": spec.name,
            "target": kind, "output": outdir, "output_format": out_format.name(),
            "virtual_size": total, "dry_run": args.dry_run, "convert": !args.no_convert,
            "disks": disks.iter().map(|d| json!({
                "source": d.label, "format": d.format, "virtual_size": d.source.size(),
            })).collect::<Vec<_>>(),
        }),
    );
    for n in &spec.notes {
        reporter.warn(n);
    }
    for (d, vd) in disks.iter().zip(&spec.disks) {
        if let Some(c) = vd.capacity.filter(|c| *c != d.source.size()) {
            reporter.warn(&format!(
                "{}: the description says {c} bytes, the image holds {} bytes; the image wins",
                d.label,
                d.source.size()
            ));
        }
    }

    // Stages: volumes → filesystems → inspect → plan → apply, over all disks.
    let mut guest = None;
    let mut inspected_fw = None;
    let sources: Vec<Arc<dyn BlockSource>> = if args.no_convert {
        disks.iter().map(|d| d.source.clone()).collect()
    } else {
        let gdisks = disks
            .iter()
            .map(|d| Disk {
                path: d.label.clone(),
                format: d.format.clone(),
                source: d.source.clone(),
            })
            .collect();
        let Some(prepared) = prepare_and_apply(args, gdisks, &reporter, mode)? else {
            return Ok(exit::OK);
        };
        if let Some(r) = &prepared.root {
            guest = Some(GuestInfo {
                os_type: r.os_type.clone(),
                distro: r.distro.clone(),
                version: r.version.clone(),
                product_name: r.product_name.clone(),
            });
            inspected_fw = match r.firmware.as_str() {
                "uefi" => Some(Firmware::Uefi),
                "bios" => Some(Firmware::Bios),
                _ => None,
            };
        }
        prepared
            .overlays
            .iter()
            .map(|o| o.clone() as Arc<dyn BlockSource>)
            .collect()
    };
    let firmware = resolve_firmware(&spec, inspected_fw, &reporter);

    // Stage: copy. All disks at once, sharing the worker threads, so small
    // and large disks overlap and separate storage is read in parallel.
    let cpus = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2));
    let per_disk = (cpus / sources.len()).max(1);
    let done: Vec<AtomicU64> = sources.iter().map(|_| AtomicU64::new(0)).collect();
    let results: Vec<Result<crate::copy::CopyStats>> = std::thread::scope(|s| {
        let handles: Vec<_> = sources
            .iter()
            .zip(&outputs)
            .zip(&disks)
            .enumerate()
            .map(|(i, ((src, out), d))| {
                let (done, reporter, wopts) = (&done, &reporter, &wopts);
                s.spawn(move || {
                    copy_to(src.as_ref(), out, out_format, wopts, args, Some(per_disk), &|n| {
                        done[i].store(n, Ordering::Relaxed);
                        reporter.progress(done.iter().map(|d| d.load(Ordering::Relaxed)).sum());
                    })
                    .with_context(|| format!("converting {} to {}", d.label, out.display()))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a copy thread panicked")))
            })
            .collect()
    });
    // A VM is converted whole or not at all: if one disk failed, the disks
    // that were finished are removed again (as they are if a later stage fails).
    let mut written = WrittenDisks(Vec::new());
    let mut first_error = None;
    let mut all_stats = Vec::with_capacity(results.len());
    for (res, out) in results.into_iter().zip(&outputs) {
        match res {
            Ok(st) => {
                written.0.push(out.clone());
                all_stats.push(st);
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let mut out_disks = Vec::with_capacity(sources.len());
    let mut read = 0u64;
    let mut stored = 0u64;
    for (((stats, src), out), d) in all_stats.into_iter().zip(&sources).zip(&outputs).zip(&disks) {
        read += stats.bytes_read;
        stored += stats.output.file_size;
        for n in &stats.output.notes {
            reporter.warn(n);
        }
        reporter.event(
            "disk",
            json!({"source": d.label, "output": out, "bytes_read": stats.bytes_read,
                   "file_size": stats.output.file_size, "virtual_size": src.size()}),
        );
        out_disks.push(OutDisk {
            path: std::path::absolute(out).with_context(|| format!("resolving {}", out.display()))?,
            format: out_format.name().to_string(),
            virtual_size: src.size(),
        });
    }

    // Stage: output. The target's description of the VM.
    let ovm = OutputVm {
        name: spec.name.clone(),
        vcpus: spec.vcpus,
        memory_mib: spec.memory_mib,
        firmware,
        disks: out_disks,
        nics: spec.nics.clone(),
        guest,
        source_os_type: spec.os_type.clone(),
    };
    let files = target::write(kind, &ovm, &topts, &outdir).with_context(|| {
        format!(
            "writing the {} description into {}",
            kind.name(),
            outdir.display()
        )
    })?;
    reporter.finish();
    written.0.clear();
    created_dir.0 = None;

    let secs = reporter.elapsed();
    let shown_dir = if kind == TargetKind::Null {
        PathBuf::from("(discarded)")
    } else {
        outdir.clone()
    };
    reporter.event(
        "done",
        json!({
            "name": spec.name, "target": kind, "output": shown_dir, "seconds": secs,
            "bytes_read": read, "file_size": stored, "firmware": firmware,
            "disks": if kind == TargetKind::Null { Vec::new() } else { outputs.clone() },
            "files": files,
        }),
    );
    reporter.say(&format!(
        "{} ({} disk{}, {}, {}) -> {} [{}]: {} read, {} stored, in {secs:.2} s",
        spec.name,
        outputs.len(),
        if outputs.len() == 1 { "" } else { "s" },
        human_bytes(total),
        firmware.name(),
        shown_dir.display(),
        kind.name(),
        human_bytes(read),
        human_bytes(stored),
    ));
    for f in &files {
        reporter.say(&format!("  wrote {}", f.display()));
    }
    Ok(exit::OK)
}

/// Disks finished by this run; removed on drop unless the run completes and
/// empties the list.
struct WrittenDisks(Vec<PathBuf>);

impl Drop for WrittenDisks {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// An output directory made by this run; removed on drop if still set and empty.
struct CreatedDir(Option<PathBuf>);

impl Drop for CreatedDir {
    fn drop(&mut self) {
        if let Some(d) = &self.0 {
            // Fails, harmlessly, when the directory is not empty.
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// The firmware the converted VM boots with: the description's, else what
/// inspection found, else BIOS. A disagreement is reported.
fn resolve_firmware(spec: &VmSpec, inspected: Option<Firmware>, r: &Reporter) -> Firmware {
    match (spec.firmware, inspected) {
        (Some(s), Some(i)) if s != i => {
            r.warn(&format!(
                "the VM description says {} firmware but the guest looks like {}; using {}",
                s.name(),
                i.name(),
                s.name()
            ));
            s
        }
        (Some(s), _) => s,
        (None, Some(i)) => i,
        (None, None) => Firmware::Bios,
    }
}

/// Where the disk file `path` of `spec` is, checked like a VMDK's extents: a
/// VMX or OVF may only name files in its own directory or one the user
/// allowed with --allow-backing (a VMX may name any path on the machine).
fn resolve_disk_file(spec: &VmSpec, path: &Path, args: &ConvertArgs) -> Result<PathBuf> {
    if spec.source_kind == vm::SourceKind::Disk {
        return Ok(path.to_path_buf());
    }
    let opts = crate::options::open_options(&args.source, args.source_format);
    let opener = v2x_formats::open::Opener::new(&spec.source_path, &opts)?;
    let abs = std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))?;
    Ok(opener.resolve_part(&spec.source_path, &abs, "disk file")?)
}

/// Opens every disk of `spec` read-only. Gzip members are unpacked into `unpack`.
fn open_disks(args: &ConvertArgs, spec: &VmSpec, unpack: &Path) -> Result<Vec<OpenDisk>> {
    let mut out = Vec::with_capacity(spec.disks.len());
    for (i, d) in spec.disks.iter().enumerate() {
        let (label, source): (String, Arc<dyn BlockSource>) = match &d.location {
            DiskLocation::File { path } => {
                let file = resolve_disk_file(spec, path, args)?;
                (
                    path.display().to_string(),
                    Arc::from(open_source(&file, &args.source, args.source_format)?),
                )
            }
            DiskLocation::Member { tar, member, .. } => {
                let label = format!("{}!{member}", tar.display());
                let opts = crate::options::open_options(&args.source, args.source_format);
                let src = vm::open::open_disk(d, &opts, Some(unpack))
                    .with_context(|| format!("opening {label}"))?;
                (label, Arc::from(src))
            }
            DiskLocation::Blank => {
                let label = format!("blank disk {}", disk_name(i));
                let size = d.capacity.ok_or_else(|| {
                    v2x_formats::Error::invalid(format!("{label} has no capacity in the VM description"))
                })?;
                (label.clone(), Arc::new(BlankDisk::new(&label, size)))
            }
        };
        let format = source.info().format;
        out.push(OpenDisk {
            label,
            format,
            source,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_names() {
        assert_eq!(disk_name(0), "sda");
        assert_eq!(disk_name(25), "sdz");
        assert_eq!(disk_name(26), "sdaa");
        assert_eq!(disk_name(27), "sdab");
        assert_eq!(disk_name(51), "sdaz");
        assert_eq!(disk_name(52), "sdba");
        assert_eq!(disk_name(701), "sdzz");
        assert_eq!(disk_name(702), "sdaaa");
    }

    #[test]
    fn network_mappings() {
        let m = mappings(&["VM Network:default".into(), "br0".into(), "a:b:c".into()]);
        assert_eq!(
            m,
            vec![
                ("VM Network".into(), "default".into()),
                (String::new(), "br0".into()),
                ("a".into(), "b:c".into())
            ]
        );
    }
}
