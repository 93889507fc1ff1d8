//! Entry points shared by the cargo-fuzz targets of the guest layer (volumes,
//! filesystems, inspection parsers) and the tests that replay their corpora.
//! Any error is fine; a panic, hang or huge allocation is a bug.

use crate::fs::{FileType, Filesystem, FsKind};
use std::sync::Arc;
use v2x_formats::block::BlockSource;
use v2x_formats::file::HostFile;
use v2x_formats::raw::RawImage;

/// The fuzz targets whose inputs [`exercise`] understands, by name.
pub const TARGETS: &[&str] = &[
    "partitions",
    "lvm_metadata",
    "ext4",
    "ntfs",
    "fat",
    "cpio",
    "initramfs",
    "ovf",
    "vmx",
    "ova",
];

/// Feeds `data` to the parser behind fuzz target `target`.
///
/// Panics on an unknown target name, so a replay test cannot silently test nothing.
pub fn exercise(target: &str, data: &[u8]) {
    match target {
        "partitions" => partitions(data),
        "lvm_metadata" => {
            let _ = crate::volume::lvm::model::parse_vg(data, 0);
        }
        "ext4" => exercise_fs(FsKind::Ext, data),
        "ntfs" => exercise_fs(FsKind::Ntfs, data),
        "fat" => exercise_fs(FsKind::Fat, data),
        "cpio" => {
            let _ = crate::guest::initramfs::list_cpio(data);
        }
        "initramfs" => crate::guest::initramfs::fuzz_walk(data),
        "ova" => crate::vm::ova::fuzz(data),
        "xfs" => crate::fs::xfs::fuzz::walk(data),
        "hive" => exercise_hive(data),
        "btrfs" => crate::fs::btrfs::fuzz::exercise(data),
        "ext4w" => {
            let _ = crate::fs::ext4w::fuzz_edit(data);
        }
        "ovf" => exercise_ovf(data),
        "vmx" => {
            let text = String::from_utf8_lossy(data);
            if let Ok(spec) = crate::vm::vmx::parse(&text, std::path::Path::new("fuzz.vmx")) {
                let _ = spec.render();
            }
        }
        _ => panic!("unknown fuzz target {target}"),
    }
}

/// Scans `data` as one disk, then reads the start and the map of every volume found.
fn partitions(data: &[u8]) {
    use std::sync::Arc;
    use v2x_formats::block::BlockSource;
    let file = v2x_formats::file::HostFile::from_bytes("fuzz", data.to_vec());
    let Ok(raw) = v2x_formats::raw::RawImage::new(file) else {
        return;
    };
    let disk: Arc<dyn BlockSource> = Arc::new(raw);
    let Ok(set) = crate::volume::scan(&[disk]) else {
        return;
    };
    for v in &set.volumes {
        let mut buf = vec![0u8; v.source.size().min(4096) as usize];
        let _ = v.source.read_at(0, &mut buf);
        let _ = v.source.map(0, v.source.size());
        let _ = v.linux_paths();
    }
}

/// Most directory entries, and most bytes per file, one filesystem fuzz input visits.
const FS_WALK_ENTRIES: usize = 256;
const FS_WALK_READ: u64 = 64 << 10;

/// Opens `data` as a filesystem of `kind` and walks its tree within a budget.
fn exercise_fs(kind: FsKind, data: &[u8]) {
    let Ok(raw) = RawImage::new(HostFile::from_bytes("fuzz-input", data.to_vec())) else {
        return;
    };
    let source: Arc<dyn BlockSource> = Arc::new(raw);
    let Ok(fs) = crate::fs::probe::open_as(kind, source) else {
        return;
    };
    let _ = (fs.label(), fs.uuid(), fs.kind_name(), fs.notes());
    walk(fs.as_ref(), FS_WALK_READ);
}

/// Visits up to [`FS_WALK_ENTRIES`] objects of `fs`, reading up to
/// `read_len` bytes of each file. Shared by the filesystem fuzz targets.
pub(crate) fn walk(fs: &dyn Filesystem, read_len: u64) {
    let mut todo = vec!["/".to_string()];
    let mut visited = 0;
    while let Some(dir) = todo.pop() {
        let Ok(entries) = fs.read_dir(&dir) else { continue };
        for e in entries {
            visited += 1;
            if visited > FS_WALK_ENTRIES {
                return;
            }
            let path = if dir == "/" {
                format!("/{}", e.name)
            } else {
                format!("{dir}/{}", e.name)
            };
            let _ = fs.lstat(&path);
            match e.file_type {
                FileType::Dir => todo.push(path),
                FileType::File => {
                    let _ = fs.read_range(&path, 0, read_len);
                }
                FileType::Symlink => {
                    let _ = fs.read_link(&path);
                }
                FileType::Other => {}
            }
        }
    }
}

/// Parses a registry hive and walks every key and value, within a budget.
fn exercise_hive(data: &[u8]) {
    let Ok(hive) = crate::guest::hive::Hive::parse(data.to_vec()) else {
        return;
    };
    let mut budget = 10_000u32;
    let _ = hive.walk(|path, key| {
        budget = budget
            .checked_sub(1)
            .ok_or_else(|| v2x_formats::Error::invalid("fuzz budget"))?;
        for v in key.values()? {
            let _ = (v.as_string(), v.as_multi_string(), v.as_u32(), v.as_u64());
        }
        let _ = hive.open(path);
        Ok(())
    });
}

/// Parses `data` as an OVF descriptor, resolving hrefs by the same
/// containment rule `ovf::load` uses, and renders the result.
fn exercise_ovf(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut resolve = |href: &str, _gzip: bool| {
        crate::vm::ovf::contained_path(href).map(|path| crate::vm::DiskLocation::File { path })
    };
    if let Ok(spec) = crate::vm::ovf::parse(&text, std::path::Path::new("fuzz.ovf"), &mut resolve) {
        let _ = spec.render();
    }
}
