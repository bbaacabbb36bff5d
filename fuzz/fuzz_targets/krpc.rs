//! Fuzz target `krpc`: see `fuzz/targets.rs`, `krpc_decode`.
#![no_main]

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::krpc_decode(data));
