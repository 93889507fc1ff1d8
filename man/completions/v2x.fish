# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_v2x_global_optspecs
    string join \n h/help V/version
end

function __fish_v2x_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_v2x_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_v2x_using_subcommand
    set -l cmd (__fish_v2x_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c v2x -n "__fish_v2x_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c v2x -n "__fish_v2x_needs_command" -s V -l version -d 'Print version'
complete -c v2x -n "__fish_v2x_needs_command" -f -a "convert" -d 'Convert a disk image to another format (qcow2 by default), or a whole VM (OVA, OVF, VMX) for a target platform'
complete -c v2x -n "__fish_v2x_needs_command" -f -a "batch" -d 'Convert every VM listed in a TOML manifest; a failed VM does not stop the others'
complete -c v2x -n "__fish_v2x_needs_command" -f -a "info" -d 'Show what an image is: format, sizes, backing chain'
complete -c v2x -n "__fish_v2x_needs_command" -f -a "compare" -d 'Compare the guest-visible contents of two images (like qemu-img compare)'
complete -c v2x -n "__fish_v2x_needs_command" -f -a "inspect" -d 'Look inside a guest\'s disks: partitions, LVM, filesystems and operating systems'
complete -c v2x -n "__fish_v2x_needs_command" -f -a "completions" -d 'Print a shell completion script to standard output'
complete -c v2x -n "__fish_v2x_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c v2x -n "__fish_v2x_using_subcommand convert" -s f -l source-format -d 'Source format; detected from the image\'s magic when omitted' -r -f -a "raw\t'Plain disk bytes'
qcow2\t'qcow2 v2/v3'
vpc\t'VHD (Virtual PC, Hyper-V gen 1, Azure, XenServer)'
vhdx\t'VHDX (Hyper-V)'
vdi\t'VirtualBox VDI'
vmdk\t'VMDK: descriptor, hosted sparse, streamOptimized, flat, vmfsSparse or seSparse'"
complete -c v2x -n "__fish_v2x_using_subcommand convert" -s O -l output-format -d 'Output format; taken from OUTPUT\'s extension when omitted, else qcow2' -r -f -a "raw\t'Plain disk bytes, sparse'
qcow2\t'qcow2 (compat 1.1)'
vpc\t'VHD, fixed (`-o subformat=dynamic` for dynamic), size rounded up to 1 MiB (Azure)'
vhdx\t'Dynamic VHDX (`-o cluster_size` sets the block size, default 32 MiB)'
vmdk\t'streamOptimized VMDK (for VMware, OVA and AWS import)'"
complete -c v2x -n "__fish_v2x_using_subcommand convert" -s o -l option -d 'Output format options as key=value, comma-separated or repeated, like qemu-img: cluster_size=SIZE, compression_type=zlib|zstd, compression_level=N, preallocation=off|full' -r
complete -c v2x -n "__fish_v2x_using_subcommand convert" -s c -l compress -d 'Compress the output (qcow2): `-c`, or `--compress=ALG`. ALG defaults to `-o compression_type`, else zlib' -r -f -a "zlib\t'Deflate; readable by every qemu'
zstd\t'Zstandard; needs qemu 5.1 or later to read'"
complete -c v2x -n "__fish_v2x_using_subcommand convert" -s j -l threads -d 'Worker threads for reading and compressing (default: number of CPUs)' -r
complete -c v2x -n "__fish_v2x_using_subcommand convert" -l root -d 'Which operating system to convert when the disks hold several: `first` (the best-ranked root, the default) or the root\'s volume (sda2, /dev/sda2, vg/root, /dev/mapper/vg-root). v2x never prompts' -r
complete -c v2x -n "__fish_v2x_using_subcommand convert" -l allow-backing -d 'Allow backing files, VMDK extents and VMX disk files in DIR (repeatable), or anywhere with `any`. By default only files in the image\'s own directory are followed' -r
complete -c v2x -n "__fish_v2x_using_subcommand convert" -l max-chain-depth -d 'Deepest backing chain to follow' -r
complete -c v2x -n "__fish_v2x_using_subcommand convert" -s t -l target -d 'Write a whole VM for this platform into the OUTPUT directory: `local` (libvirt domain XML), `qemu` (a shell script), `kubevirt` (VirtualMachine YAML), `openstack` (glance image properties), `null` (convert, then discard). Default: `local` for OVA/OVF/VMX sources; none (one disk image) otherwise' -r -f -a "local\t'Disks plus a libvirt domain XML (NAME.xml)'
qemu\t'Disks plus an executable qemu-system-x86_64 script (NAME.sh)'
kubevirt\t'Disks plus a KubeVirt VirtualMachine (NAME.yaml)'
openstack\t'Disks plus glance image properties (NAME.json)'
null\t'Convert and discard the output (for tests and timing)'"
complete -c v2x -n "__fish_v2x_using_subcommand convert" -s n -l name -d 'The VM\'s name: the stem of every output file (default: the source\'s name)' -r
complete -c v2x -n "__fish_v2x_using_subcommand convert" -l network -d 'Map source network IN to target network OUT (repeatable); `--network OUT` alone is the default for unmapped networks (else libvirt\'s `default`)' -r
complete -c v2x -n "__fish_v2x_using_subcommand convert" -l bridge -d 'Map source network IN to host bridge OUT (repeatable); `--bridge OUT` alone is the default for unmapped networks. A --network mapping wins' -r
complete -c v2x -n "__fish_v2x_using_subcommand convert" -l block-driver -d 'How the VM\'s disks are attached on the target' -r -f -a "virtio-blk\t'virtio-blk'
virtio-scsi\t'virtio-scsi'"
complete -c v2x -n "__fish_v2x_using_subcommand convert" -s p -l progress -d 'Show a progress bar (a plain progress line when standard error is not a terminal)'
complete -c v2x -n "__fish_v2x_using_subcommand convert" -l json -d 'Print one JSON event per line on standard output: start, progress, done, error'
complete -c v2x -n "__fish_v2x_using_subcommand convert" -s q -l quiet -d 'Print nothing but errors'
complete -c v2x -n "__fish_v2x_using_subcommand convert" -l force -d 'Replace OUTPUT if it exists'
complete -c v2x -n "__fish_v2x_using_subcommand convert" -l sync -d 'fsync the output (and its directory) before and after the final rename, so the image survives a power loss. Off by default, as with qemu-img and cp'
complete -c v2x -n "__fish_v2x_using_subcommand convert" -l dry-run -d 'Inspect the guest and print the edit plan (every file changed, with diffs of text files), then exit without writing anything'
complete -c v2x -n "__fish_v2x_using_subcommand convert" -l no-convert -d 'Copy the disk only: no inspection and no guest changes'
complete -c v2x -n "__fish_v2x_using_subcommand convert" -l no-backing -d 'Refuse images that need a backing file'
complete -c v2x -n "__fish_v2x_using_subcommand convert" -l allow-external-data -d 'Allow qcow2 images whose data lives in an external data file'
complete -c v2x -n "__fish_v2x_using_subcommand convert" -l print-source -d 'Print the VM the source describes (disks, CPUs, memory, NICs, firmware, OS) and exit; with --json, as one JSON object'
complete -c v2x -n "__fish_v2x_using_subcommand convert" -l no-verify-manifest -d 'Do not check an OVA\'s manifest (.mf) digests'
complete -c v2x -n "__fish_v2x_using_subcommand convert" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c v2x -n "__fish_v2x_using_subcommand batch" -s j -l jobs -d 'VMs converted at the same time' -r
complete -c v2x -n "__fish_v2x_using_subcommand batch" -l json -d 'Print one JSON event per line, each tagged with its VM ("vm"), then a summary event'
complete -c v2x -n "__fish_v2x_using_subcommand batch" -s q -l quiet -d 'Print nothing but errors and the summary'
complete -c v2x -n "__fish_v2x_using_subcommand batch" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c v2x -n "__fish_v2x_using_subcommand info" -s f -l format -d 'Image format; detected when omitted' -r -f -a "raw\t'Plain disk bytes'
qcow2\t'qcow2 v2/v3'
vpc\t'VHD (Virtual PC, Hyper-V gen 1, Azure, XenServer)'
vhdx\t'VHDX (Hyper-V)'
vdi\t'VirtualBox VDI'
vmdk\t'VMDK: descriptor, hosted sparse, streamOptimized, flat, vmfsSparse or seSparse'"
complete -c v2x -n "__fish_v2x_using_subcommand info" -l allow-backing -d 'Allow backing files, VMDK extents and VMX disk files in DIR (repeatable), or anywhere with `any`. By default only files in the image\'s own directory are followed' -r
complete -c v2x -n "__fish_v2x_using_subcommand info" -l max-chain-depth -d 'Deepest backing chain to follow' -r
complete -c v2x -n "__fish_v2x_using_subcommand info" -l json -d 'Print JSON instead of text'
complete -c v2x -n "__fish_v2x_using_subcommand info" -l map -d 'Also walk the allocation map and report allocated bytes per kind'
complete -c v2x -n "__fish_v2x_using_subcommand info" -l no-backing -d 'Refuse images that need a backing file'
complete -c v2x -n "__fish_v2x_using_subcommand info" -l allow-external-data -d 'Allow qcow2 images whose data lives in an external data file'
complete -c v2x -n "__fish_v2x_using_subcommand info" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c v2x -n "__fish_v2x_using_subcommand compare" -s f -d 'Format of the first image; detected when omitted' -r -f -a "raw\t'Plain disk bytes'
qcow2\t'qcow2 v2/v3'
vpc\t'VHD (Virtual PC, Hyper-V gen 1, Azure, XenServer)'
vhdx\t'VHDX (Hyper-V)'
vdi\t'VirtualBox VDI'
vmdk\t'VMDK: descriptor, hosted sparse, streamOptimized, flat, vmfsSparse or seSparse'"
complete -c v2x -n "__fish_v2x_using_subcommand compare" -s F -d 'Format of the second image; detected when omitted' -r -f -a "raw\t'Plain disk bytes'
qcow2\t'qcow2 v2/v3'
vpc\t'VHD (Virtual PC, Hyper-V gen 1, Azure, XenServer)'
vhdx\t'VHDX (Hyper-V)'
vdi\t'VirtualBox VDI'
vmdk\t'VMDK: descriptor, hosted sparse, streamOptimized, flat, vmfsSparse or seSparse'"
complete -c v2x -n "__fish_v2x_using_subcommand compare" -l allow-backing -d 'Allow backing files, VMDK extents and VMX disk files in DIR (repeatable), or anywhere with `any`. By default only files in the image\'s own directory are followed' -r
complete -c v2x -n "__fish_v2x_using_subcommand compare" -l max-chain-depth -d 'Deepest backing chain to follow' -r
complete -c v2x -n "__fish_v2x_using_subcommand compare" -s s -l strict -d 'Strict: images of different sizes differ, even if the extra part reads as zero'
complete -c v2x -n "__fish_v2x_using_subcommand compare" -s q -l quiet -d 'Print nothing; only the exit status tells'
complete -c v2x -n "__fish_v2x_using_subcommand compare" -l no-backing -d 'Refuse images that need a backing file'
complete -c v2x -n "__fish_v2x_using_subcommand compare" -l allow-external-data -d 'Allow qcow2 images whose data lives in an external data file'
complete -c v2x -n "__fish_v2x_using_subcommand compare" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c v2x -n "__fish_v2x_using_subcommand inspect" -s f -l format -d 'Image format (for every image); detected when omitted' -r -f -a "raw\t'Plain disk bytes'
qcow2\t'qcow2 v2/v3'
vpc\t'VHD (Virtual PC, Hyper-V gen 1, Azure, XenServer)'
vhdx\t'VHDX (Hyper-V)'
vdi\t'VirtualBox VDI'
vmdk\t'VMDK: descriptor, hosted sparse, streamOptimized, flat, vmfsSparse or seSparse'"
complete -c v2x -n "__fish_v2x_using_subcommand inspect" -l allow-backing -d 'Allow backing files, VMDK extents and VMX disk files in DIR (repeatable), or anywhere with `any`. By default only files in the image\'s own directory are followed' -r
complete -c v2x -n "__fish_v2x_using_subcommand inspect" -l max-chain-depth -d 'Deepest backing chain to follow' -r
complete -c v2x -n "__fish_v2x_using_subcommand inspect" -l json -d 'Print the report as JSON (schema in the man page)'
complete -c v2x -n "__fish_v2x_using_subcommand inspect" -l no-backing -d 'Refuse images that need a backing file'
complete -c v2x -n "__fish_v2x_using_subcommand inspect" -l allow-external-data -d 'Allow qcow2 images whose data lives in an external data file'
complete -c v2x -n "__fish_v2x_using_subcommand inspect" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c v2x -n "__fish_v2x_using_subcommand completions" -s h -l help -d 'Print help'
complete -c v2x -n "__fish_v2x_using_subcommand help; and not __fish_seen_subcommand_from convert batch info compare inspect completions help" -f -a "convert" -d 'Convert a disk image to another format (qcow2 by default), or a whole VM (OVA, OVF, VMX) for a target platform'
complete -c v2x -n "__fish_v2x_using_subcommand help; and not __fish_seen_subcommand_from convert batch info compare inspect completions help" -f -a "batch" -d 'Convert every VM listed in a TOML manifest; a failed VM does not stop the others'
complete -c v2x -n "__fish_v2x_using_subcommand help; and not __fish_seen_subcommand_from convert batch info compare inspect completions help" -f -a "info" -d 'Show what an image is: format, sizes, backing chain'
complete -c v2x -n "__fish_v2x_using_subcommand help; and not __fish_seen_subcommand_from convert batch info compare inspect completions help" -f -a "compare" -d 'Compare the guest-visible contents of two images (like qemu-img compare)'
complete -c v2x -n "__fish_v2x_using_subcommand help; and not __fish_seen_subcommand_from convert batch info compare inspect completions help" -f -a "inspect" -d 'Look inside a guest\'s disks: partitions, LVM, filesystems and operating systems'
complete -c v2x -n "__fish_v2x_using_subcommand help; and not __fish_seen_subcommand_from convert batch info compare inspect completions help" -f -a "completions" -d 'Print a shell completion script to standard output'
complete -c v2x -n "__fish_v2x_using_subcommand help; and not __fish_seen_subcommand_from convert batch info compare inspect completions help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
