//! Fuzz target `v2_info`: see `fuzz/targets.rs`, `v2_info`.
#![no_main]

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::v2_info(data));
