//! Replays every saved fuzz input and crasher of the guest-layer fuzz
//! targets (`fuzz/corpus/<target>/`, `fuzz/regressions/<target>/`) as an
//! ordinary test, so stable CI covers them.

use std::path::Path;

#[test]
fn every_guest_fuzz_target_replays_its_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for target in v2x::fuzzing::TARGETS {
        let mut n = 0;
        for dir in ["corpus", "regressions"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
                continue;
            };
            for e in entries {
                let p = e.unwrap().path();
                if !p.is_file() {
                    continue;
                }
                let data = std::fs::read(&p).unwrap();
                let start = std::time::Instant::now();
                v2x::fuzzing::exercise(target, &data);
                assert!(
                    start.elapsed().as_secs() < 5,
                    "{} took {:?}",
                    p.display(),
                    start.elapsed()
                );
                n += 1;
            }
        }
        assert!(
            n > 0,
            "no saved fuzz inputs for {target}: the corpus must not be empty"
        );
    }
}
