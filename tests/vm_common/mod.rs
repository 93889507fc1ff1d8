//! Golden-file helpers shared by the VM description tests: the parsed spec
//! is compared as `render()` text and as pretty JSON, with a directory prefix
//! replaced so goldens do not depend on where the checkout or corpus lives.

use std::path::Path;
use v2x::vm::VmSpec;

/// Compares `text` with the golden file `file`; `V2X_UPDATE_GOLDEN=1` rewrites it.
pub fn compare(file: &Path, text: &str) {
    if std::env::var_os("V2X_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, text).unwrap();
    }
    let want = std::fs::read_to_string(file).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with V2X_UPDATE_GOLDEN=1 to create it",
            file.display()
        )
    });
    assert_eq!(
        text,
        want,
        "output differs from {}; if the change is deliberate, rerun with V2X_UPDATE_GOLDEN=1 and review the diff",
        file.display()
    );
}

/// Checks a parse result against `<dir>/<name>.txt` (render, or the error) and,
/// on success, `<dir>/<name>.json`. `prefix` (a directory) is shown as `label`.
pub fn check(dir: &Path, name: &str, got: v2x_formats::Result<VmSpec>, prefix: &str, label: &str) {
    let mask = |s: String| {
        if prefix.is_empty() {
            s
        } else {
            s.replace(prefix, label)
        }
    };
    match got {
        Ok(spec) => {
            compare(&dir.join(format!("{name}.txt")), &mask(spec.render()));
            let json = serde_json::to_string_pretty(&spec).unwrap() + "\n";
            compare(&dir.join(format!("{name}.json")), &mask(json));
            let _ = std::fs::remove_file(dir.join(format!("{name}.error")));
        }
        Err(e) => {
            let text = format!("{e}\n");
            compare(&dir.join(format!("{name}.error")), &mask(text));
        }
    }
}
