//! Entry points shared by the cargo-fuzz targets of the guest layer (volumes,
//! filesystems, inspection parsers) and the tests that replay their corpora.
//! Any error is fine; a panic, hang or huge allocation is a bug.

/// The fuzz targets whose inputs [`exercise`] understands, by name.
pub const TARGETS: &[&str] = &["ext4w"];

/// Feeds `data` to the parser behind fuzz target `target`.
///
/// Panics on an unknown target name, so a replay test cannot silently test nothing.
pub fn exercise(target: &str, data: &[u8]) {
    match target {
        "ext4w" => {
            let _ = crate::fs::ext4w::fuzz_edit(data);
        }
        _ => panic!("unknown fuzz target {target}"),
    }
}
