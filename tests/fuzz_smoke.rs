//! Smoke run of every fuzz target on stable Rust (issue 7): each file of
//! `fuzz/corpus/<target>/` (seeds and regression cases) is fed to the same
//! function the `cargo fuzz` target calls (`fuzz/targets.rs`), so CI needs
//! no nightly toolchain and a crash once found stays fixed.

#[path = "../fuzz/targets.rs"]
mod targets;

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let data = std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
            (p, data)
        })
        .collect();
    out.sort();
    out
}

fn run(target: &str) {
    let (_, f) = targets::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .expect("known target");
    let files = corpus(target);
    assert!(
        files.len() >= 5,
        "{target}: corpus has only {} files",
        files.len()
    );
    for (path, data) in &files {
        // name the input that panicked before the panic propagates
        let r = std::panic::catch_unwind(|| f(data));
        assert!(r.is_ok(), "{target}: {} panicked", path.display());
        // every prefix too: truncated input is the commonest hostile case
        for cut in [0, 1, data.len() / 2, data.len().saturating_sub(1)] {
            let r = std::panic::catch_unwind(|| f(&data[..cut.min(data.len())]));
            assert!(
                r.is_ok(),
                "{target}: {} cut at {cut} panicked",
                path.display()
            );
        }
    }
}

#[test]
fn every_target_has_a_corpus() {
    for (name, _) in targets::TARGETS {
        assert!(!corpus(name).is_empty(), "no corpus for {name}");
    }
}

#[test]
fn magnet_corpus() {
    run("magnet");
}

#[test]
fn bencode_info_corpus() {
    run("bencode_info");
}

#[test]
fn wire_corpus() {
    run("wire");
}

#[test]
fn extension_corpus() {
    run("extension");
}

#[test]
fn krpc_corpus() {
    run("krpc");
}

#[test]
fn utp_packet_corpus() {
    run("utp_packet");
}

#[test]
fn mse_corpus() {
    run("mse");
}

#[test]
fn v2_info_corpus() {
    run("v2_info");
}

#[test]
fn hash_messages_corpus() {
    run("hash_messages");
}

#[test]
fn gateway_request_corpus() {
    run("gateway_request");
}

#[test]
fn holepunch_corpus() {
    run("holepunch");
}
