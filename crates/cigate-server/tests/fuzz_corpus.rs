//! Replays the committed fuzz seed corpora (`fuzz/corpus/<target>/`) through the same
//! bodies the libFuzzer targets run, so a regression on a known input fails `cargo test`
//! in seconds, without a fuzzer.

use std::fs;
use std::path::{Path, PathBuf};

use cigate_server::fuzzing::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let entries =
        fs::read_dir(dir).unwrap_or_else(|err| panic!("{} cannot be read: {err}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_seed_passes_its_target() {
    let mut replayed = 0;
    for (name, body) in TARGETS {
        let dir = fuzz_dir().join("corpus").join(name);
        let seeds = files_in(&dir);
        assert!(!seeds.is_empty(), "{} has no seeds", dir.display());
        for seed in seeds {
            let data = fs::read(&seed).expect("a seed file");
            let outcome = std::panic::catch_unwind(|| body(&data));
            assert!(outcome.is_ok(), "{name} fails on {}", seed.display());
            replayed += 1;
        }
    }
    assert!(replayed >= TARGETS.len());
}

#[test]
fn every_target_has_a_binary_and_every_corpus_a_target() {
    let manifest = fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml");
    for (name, _) in TARGETS {
        let source = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
        let text = fs::read_to_string(&source)
            .unwrap_or_else(|err| panic!("{} cannot be read: {err}", source.display()));
        assert!(
            text.contains(&format!("cigate_server::fuzzing::{name}(")),
            "{} does not run the shared body",
            source.display()
        );
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "fuzz/Cargo.toml has no [[bin]] {name}"
        );
    }
    for dir in fs::read_dir(fuzz_dir().join("corpus")).expect("fuzz/corpus") {
        let dir = dir.expect("a directory entry").path();
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        assert!(
            TARGETS.iter().any(|(target, _)| *target == name),
            "fuzz/corpus/{name} belongs to no target"
        );
    }
}
