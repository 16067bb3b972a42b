//! Replays the corpus of each fuzz target (`fuzz/corpus/<target>/`, seeds and what `cargo fuzz`
//! found) through the target's checks, so every test run keeps what fuzzing once proved.

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{target} fails on {}", path.display());
        inputs += 1;
    }
    // A corpus that went missing would make this test pass vacuously.
    assert!(inputs >= 10, "only {inputs} inputs in {}", dir.display());
    println!("{target}: {inputs} inputs replayed");
}

#[test]
fn host_corpus() {
    replay("host", tenantgate_contract::fuzz_checks::host);
}

#[test]
fn signature_corpus() {
    replay("signature", tenantgate_contract::fuzz_checks::signature);
}
