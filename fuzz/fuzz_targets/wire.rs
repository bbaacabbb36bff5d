//! Fuzz target `wire`: see `fuzz/targets.rs`, `wire`.
#![no_main]

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::wire(data));
