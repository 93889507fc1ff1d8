//! Entry points shared by the cargo-fuzz targets of the guest layer (volumes,
//! filesystems, inspection parsers) and the tests that replay their corpora.
//! Any error is fine; a panic, hang or huge allocation is a bug.

/// The fuzz targets whose inputs [`exercise`] understands, by name.
pub const TARGETS: &[&str] = &["hive"];

/// Feeds `data` to the parser behind fuzz target `target`.
///
/// Panics on an unknown target name, so a replay test cannot silently test nothing.
pub fn exercise(target: &str, data: &[u8]) {
    match target {
        "hive" => exercise_hive(data),
        _ => panic!("unknown fuzz target {target}"),
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
