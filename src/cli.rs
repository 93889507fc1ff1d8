//! Command-line definitions (clap derive). The man pages and shell
//! completions are generated from these types, so they are the one source of
//! truth for flags and help text.

use crate::convert::guest::RootChoice;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// The exit-status lines every subcommand shares (without compare's 0/1 meaning).
macro_rules! exit_status_common {
    () => {
        "  2  command-line usage error
  3  I/O error on the host (open, read, write, rename)
  4  an input image is corrupt
  5  an input uses a format or feature v2x does not support
  6  an input exceeds one of v2x's safety limits
  7  refused by policy (backing file outside allowed directories, output exists)
  8  any other failure
  130  interrupted (SIGINT or SIGTERM); the temporary output is removed"
    };
}

/// Exit codes, shown in `--help` and the man page.
pub const EXIT_CODES_HELP: &str = concat!(
    "EXIT STATUS:
  0  success (compare: the images are identical)
  1  compare: the images differ
",
    exit_status_common!()
);

/// What `convert --json` prints and how it exits, shown in `--help` and the man page.
pub const CONVERT_HELP: &str = concat!(
    "GUEST CONVERSION (unless --no-convert):
  The disk is inspected as by `v2x inspect`. For a Linux root, v2x plans the edits
  that make it boot on virtio and applies them to a copy-on-write overlay (never
  to the source) before the copy. Steps, each reported:
  device-names      /dev/sdX, hdX, xvdX, cciss names become UUID= (or /dev/vdX) in
                    fstab, crypttab, /etc/default/grub, grub.cfg, menu.lst, BLS
                    entries, grubenv and device.map
  initramfs         the guest's own virtio modules appended to every initramfs as
                    a second cpio archive (for kernels without virtio built in)
  initramfs-config  the modules recorded for initramfs-tools or dracut rebuilds
  hypervisor-tools  VMware/VirtualBox/Xen/Hyper-V tools disabled; packages removed
                    at first boot
  network           MAC-pinned interface configuration matched by name instead
  console, selinux  hvc0/xvc0 consoles become ttyS0; SELinux guests relabel
  uefi-fallback     \\EFI\\BOOT\\BOOTX64.EFI from the distribution's loader
  firstboot         a run-once job: package removal, qemu-guest-agent install
  Rules are data in drivers-db/linux/. Only ext2/3/4 and FAT are written; other
  edits are refused before anything is written. --dry-run prints the plan with
  diffs. Windows roots are copied unchanged for now, with a warning.

WHOLE VMS (an OVA, OVF or VMX source, or --target):
  OUTPUT is a directory. Every disk goes to OUTPUT/NAME-sda, NAME-sdb, ... (all copied
  at once), then the target's file: NAME.xml (local), NAME.sh (qemu), NAME.yaml
  (kubevirt) or NAME.json (openstack). OVA disks are read inside the tar; its manifest
  is checked first. Firmware: the description's, else inspection's, else BIOS.

JSON EVENTS (--json), one object per line on standard output, each with an \"event\" key:
  start     input, input_format, output, output_format, virtual_size, dry_run, convert;
            for a VM also source_kind, name, target, disks [{source, format, virtual_size}]
  plan      root (volume, os_type, distro, version, product_name, firmware, or null),
            steps: [{id, summary, notes, edits: [{op, path, ...}]}]
  step      id, edits (one per applied step)
  progress  done, total (guest bytes), percent
  warning   message
  disk      (VMs) source, output, bytes_read, file_size, virtual_size: one per disk copied
  done      output, seconds, bytes_read, bytes_skipped, data_bytes, file_size, virtual_size, notes;
            for a VM: name, target, output, seconds, bytes_read, file_size, firmware, disks, files
  error     kind (io|corrupt|unsupported|limit-exceeded|denied|invalid|interrupted|other), message

EXIT STATUS:
  0  success
",
    exit_status_common!()
);

/// The manifest format and exit status of `v2x batch`.
pub const BATCH_HELP: &str = concat!(
    "MANIFEST (TOML):
  [defaults]              options every VM gets unless it sets them itself
  target = \"local\"
  [[vm]]                  one table per VM
  source = \"web.ova\"      the VM or disk to convert (relative to the manifest)
  output = \"out/web\"      its OUTPUT (relative to the manifest)
  name = \"web\"            any other key is a long option of `v2x convert`:
  network = [\"VM Network:default\"]   lists repeat it, true sets a flag
  Keys are checked like command-line options; a bad entry fails that VM only.

JSON EVENTS (--json): the events of `convert --json`, each with \"vm\" (the VM's
  name or source), then one summary event: vms [{vm, status (ok|failed), exit,
  seconds, output, error?}], ok, failed.

EXIT STATUS:
  0  every VM converted
  otherwise the exit status of the first failed VM in manifest order (see below)
",
    exit_status_common!()
);

/// The JSON schema of `inspect --json`, shown in `--help` and the man page.
pub const INSPECT_HELP: &str = concat!(
    "JSON SCHEMA (--json), version 1. One object:
  schema      1
  disks[]     name (sda, sdb, ...), path, format, virtual_size, partition_table (mbr|gpt|none)
  volumes[]   name (sda1, sdb5, vg/lv), disk (index), size,
              kind {type: whole-disk | partition {scheme, number, start, len, type_id,
                    part_uuid?, part_label?, bootable} | logical-volume {vg, lv, uuid}},
              content {type: unknown | lvm-pv | luks | bit-locker | swap | md-raid | partition-table, ...},
              filesystem? {type (ext2|ext3|ext4|xfs|btrfs|ntfs|vfat), label, uuid, subvolumes[]?, notes[]?},
              error? (why a recognised filesystem could not be read)
  roots[]     rank (1 = the root convert picks), volume, subvolume?, os_type (linux|windows),
              distro, version, product_name, arch, hostname, firmware (bios|uefi), firmware_reason,
              mountpoints[] {mountpoint, spec, volume, fstype, subvolume?},
              linux? {...}, windows? {...} (details, described below), warnings[]
  warnings[]  problems that did not stop inspection
Fields are never renamed within a schema version; new fields may appear.

EXIT STATUS:
  0  success, whether or not an operating system was found
",
    exit_status_common!()
);

/// Offline VM image converter: VMware, Hyper-V, Xen and VirtualBox disks to KVM, without an appliance.
#[derive(Debug, Parser)]
#[command(name = "v2x", version, about, after_long_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Convert a disk image to another format (qcow2 by default), or a whole VM
    /// (OVA, OVF, VMX) for a target platform.
    #[command(after_long_help = CONVERT_HELP)]
    Convert(ConvertArgs),
    /// Convert every VM listed in a TOML manifest; a failed VM does not stop the others.
    #[command(after_long_help = BATCH_HELP)]
    Batch(BatchArgs),
    /// Show what an image is: format, sizes, backing chain.
    #[command(after_long_help = EXIT_CODES_HELP)]
    Info(InfoArgs),
    /// Compare the guest-visible contents of two images (like qemu-img compare).
    #[command(after_long_help = EXIT_CODES_HELP)]
    Compare(CompareArgs),
    /// Look inside a guest's disks: partitions, LVM, filesystems and operating systems.
    #[command(after_long_help = INSPECT_HELP)]
    Inspect(InspectArgs),
    /// Print a shell completion script to standard output.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Input formats accepted by `-f`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InputFormat {
    /// Plain disk bytes.
    Raw,
    /// qcow2 v2/v3.
    Qcow2,
    /// VHD (Virtual PC, Hyper-V gen 1, Azure, XenServer).
    Vpc,
    /// VHDX (Hyper-V).
    Vhdx,
    /// VirtualBox VDI.
    Vdi,
    /// VMDK: descriptor, hosted sparse, streamOptimized, flat, vmfsSparse or seSparse.
    Vmdk,
}

/// Output formats accepted by `-O`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormatArg {
    /// Plain disk bytes, sparse.
    Raw,
    /// qcow2 (compat 1.1).
    Qcow2,
    /// VHD, fixed (`-o subformat=dynamic` for dynamic), size rounded up to 1 MiB (Azure).
    Vpc,
    /// Dynamic VHDX (`-o cluster_size` sets the block size, default 32 MiB).
    Vhdx,
    /// streamOptimized VMDK (for VMware, OVA and AWS import).
    Vmdk,
}

/// Compression algorithms for `--compress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompressArg {
    /// Deflate; readable by every qemu.
    Zlib,
    /// Zstandard; needs qemu 5.1 or later to read.
    Zstd,
}

/// How the source chain is opened; shared by every subcommand that reads images.
#[derive(Debug, Clone, Args)]
pub struct SourceArgs {
    /// Allow backing files, VMDK extents and VMX disk files in DIR (repeatable), or
    /// anywhere with `any`. By default only files in the image's own directory are followed.
    #[arg(long, value_name = "DIR|any")]
    pub allow_backing: Vec<String>,
    /// Refuse images that need a backing file.
    #[arg(long, conflicts_with = "allow_backing")]
    pub no_backing: bool,
    /// Deepest backing chain to follow.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub max_chain_depth: u32,
    /// Allow qcow2 images whose data lives in an external data file.
    #[arg(long)]
    pub allow_external_data: bool,
}

/// Arguments of `v2x convert`.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// The source: a disk image (any supported format, or a block device), or a
    /// whole VM: an OVA, an OVF or a VMware .vmx.
    pub input: PathBuf,
    /// The new image, written to OUTPUT.tmp-* and renamed when complete. For a VM
    /// target (`--target`, and by default for OVA/OVF/VMX sources) a directory that
    /// receives NAME-sda, NAME-sdb, ... and the target's description of the VM.
    #[arg(required_unless_present = "print_source")]
    pub output: Option<PathBuf>,
    /// Source format; detected from the image's magic when omitted.
    #[arg(short = 'f', long = "source-format", value_enum)]
    pub source_format: Option<InputFormat>,
    /// Output format; taken from OUTPUT's extension when omitted, else qcow2.
    #[arg(short = 'O', long = "output-format", value_enum)]
    pub output_format: Option<OutputFormatArg>,
    /// Output format options as key=value, comma-separated or repeated, like qemu-img:
    /// cluster_size=SIZE, compression_type=zlib|zstd, compression_level=N, preallocation=off|full.
    #[arg(short = 'o', long = "option", value_name = "KEY=VALUE[,...]")]
    pub options: Vec<String>,
    /// Compress the output (qcow2): `-c`, or `--compress=ALG`. ALG defaults to
    /// `-o compression_type`, else zlib.
    #[arg(short = 'c', long, value_enum, value_name = "ALG", num_args = 0..=1, require_equals = true)]
    pub compress: Option<Option<CompressArg>>,
    /// Show a progress bar (a plain progress line when standard error is not a terminal).
    #[arg(short, long)]
    pub progress: bool,
    /// Print one JSON event per line on standard output: start, progress, done, error.
    #[arg(long)]
    pub json: bool,
    /// Print nothing but errors.
    #[arg(short, long, conflicts_with = "progress")]
    pub quiet: bool,
    /// Replace OUTPUT if it exists.
    #[arg(long)]
    pub force: bool,
    /// fsync the output (and its directory) before and after the final rename, so the
    /// image survives a power loss. Off by default, as with qemu-img and cp.
    #[arg(long)]
    pub sync: bool,
    /// Worker threads for reading and compressing (default: number of CPUs).
    #[arg(short = 'j', long, value_name = "N")]
    pub threads: Option<usize>,
    /// Inspect the guest and print the edit plan (every file changed, with
    /// diffs of text files), then exit without writing anything.
    #[arg(long, conflicts_with = "no_convert")]
    pub dry_run: bool,
    /// Copy the disk only: no inspection and no guest changes.
    #[arg(long)]
    pub no_convert: bool,
    /// Which operating system to convert when the disks hold several: `first`
    /// (the best-ranked root, the default) or the root's volume (sda2,
    /// /dev/sda2, vg/root, /dev/mapper/vg-root). v2x never prompts.
    #[arg(long, value_name = "first|DEVICE", default_value = "first")]
    pub root: RootChoice,
    /// How the source is opened.
    #[command(flatten)]
    pub source: SourceArgs,
    /// Write a whole VM for this platform into the OUTPUT directory: `local`
    /// (libvirt domain XML), `qemu` (a shell script), `kubevirt` (VirtualMachine
    /// YAML), `openstack` (glance image properties), `null` (convert, then discard).
    /// Default: `local` for OVA/OVF/VMX sources; none (one disk image) otherwise.
    #[arg(short = 't', long, value_enum)]
    pub target: Option<TargetArg>,
    /// The VM's name: the stem of every output file (default: the source's name).
    #[arg(short = 'n', long, value_name = "NAME")]
    pub name: Option<String>,
    /// Map source network IN to target network OUT (repeatable); `--network OUT`
    /// alone is the default for unmapped networks (else libvirt's `default`).
    #[arg(long, value_name = "IN:OUT")]
    pub network: Vec<String>,
    /// Map source network IN to host bridge OUT (repeatable); `--bridge OUT` alone is
    /// the default for unmapped networks. A --network mapping wins.
    #[arg(long, value_name = "IN:OUT")]
    pub bridge: Vec<String>,
    /// How the VM's disks are attached on the target.
    #[arg(long, value_enum, default_value = "virtio-blk")]
    pub block_driver: BlockDriverArg,
    /// Print the VM the source describes (disks, CPUs, memory, NICs, firmware, OS)
    /// and exit; with --json, as one JSON object.
    #[arg(long)]
    pub print_source: bool,
    /// Do not check an OVA's manifest (.mf) digests.
    #[arg(long)]
    pub no_verify_manifest: bool,
}

/// Targets accepted by `--target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TargetArg {
    /// Disks plus a libvirt domain XML (NAME.xml).
    Local,
    /// Disks plus an executable qemu-system-x86_64 script (NAME.sh).
    Qemu,
    /// Disks plus a KubeVirt VirtualMachine (NAME.yaml).
    Kubevirt,
    /// Disks plus glance image properties (NAME.json).
    Openstack,
    /// Convert and discard the output (for tests and timing).
    Null,
}

/// Disk attachment accepted by `--block-driver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BlockDriverArg {
    /// virtio-blk.
    VirtioBlk,
    /// virtio-scsi.
    VirtioScsi,
}

/// Arguments of `v2x batch`.
#[derive(Debug, Args)]
pub struct BatchArgs {
    /// The manifest: `[[vm]]` tables with `source`, `output` and any `convert` option.
    pub manifest: PathBuf,
    /// VMs converted at the same time.
    #[arg(short = 'j', long, value_name = "N", default_value_t = 1)]
    pub jobs: usize,
    /// Print one JSON event per line, each tagged with its VM ("vm"), then a summary event.
    #[arg(long)]
    pub json: bool,
    /// Print nothing but errors and the summary.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Arguments of `v2x info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// The image.
    pub image: PathBuf,
    /// Image format; detected when omitted.
    #[arg(short = 'f', long = "format", value_enum)]
    pub format: Option<InputFormat>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also walk the allocation map and report allocated bytes per kind.
    #[arg(long)]
    pub map: bool,
    /// How the image is opened.
    #[command(flatten)]
    pub source: SourceArgs,
}

/// Arguments of `v2x inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The guest's disk images, in the order the guest sees them (the first is sda).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Image format (for every image); detected when omitted.
    #[arg(short = 'f', long = "format", value_enum)]
    pub format: Option<InputFormat>,
    /// Print the report as JSON (schema in the man page).
    #[arg(long)]
    pub json: bool,
    /// How the images are opened.
    #[command(flatten)]
    pub source: SourceArgs,
}

/// Arguments of `v2x compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// First image.
    pub a: PathBuf,
    /// Second image.
    pub b: PathBuf,
    /// Format of the first image; detected when omitted.
    #[arg(short = 'f', value_enum)]
    pub format_a: Option<InputFormat>,
    /// Format of the second image; detected when omitted.
    #[arg(short = 'F', value_enum)]
    pub format_b: Option<InputFormat>,
    /// Strict: images of different sizes differ, even if the extra part reads as zero.
    #[arg(short, long)]
    pub strict: bool,
    /// Print nothing; only the exit status tells.
    #[arg(short, long)]
    pub quiet: bool,
    /// How the images are opened.
    #[command(flatten)]
    pub source: SourceArgs,
}
