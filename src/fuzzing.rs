//! Entry points shared by the cargo-fuzz targets of the guest layer (volumes,
//! filesystems, inspection parsers) and the tests that replay their corpora.
//! Any error is fine; a panic, hang or huge allocation is a bug.

/// The fuzz targets whose inputs [`exercise`] understands, by name.
pub const TARGETS: &[&str] = &["partitions", "lvm_metadata"];

/// Feeds `data` to the parser behind fuzz target `target`.
///
/// Panics on an unknown target name, so a replay test cannot silently test nothing.
pub fn exercise(target: &str, data: &[u8]) {
    match target {
        "partitions" => partitions(data),
        "lvm_metadata" => {
            let _ = crate::volume::lvm::model::parse_vg(data, 0);
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
