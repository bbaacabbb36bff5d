//! Fuzz target `holepunch`: see `fuzz/targets.rs`, `holepunch`.
#![no_main]

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::holepunch(data));
