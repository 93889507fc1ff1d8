//! The committed man pages and completions must match what the CLI
//! definitions render. Regenerate with `V2X_UPDATE_MAN=1 cargo test --test man`.

use std::path::Path;

#[test]
fn man_pages_and_completions_are_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let update = std::env::var_os("V2X_UPDATE_MAN").is_some();
    let mut stale = Vec::new();
    for (rel, bytes) in v2x::manpages::generated_files() {
        let path = root.join(&rel);
        if update {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        } else if std::fs::read(&path).ok().as_deref() != Some(&bytes[..]) {
            stale.push(rel);
        }
    }
    assert!(
        stale.is_empty(),
        "stale generated docs {stale:?}: run V2X_UPDATE_MAN=1 cargo test --test man and commit"
    );
}
