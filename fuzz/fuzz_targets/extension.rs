//! Fuzz target `extension`: see `fuzz/targets.rs`, `extension`.
#![no_main]

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::extension(data));
