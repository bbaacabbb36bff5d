//! Fuzz target `magnet`: see `fuzz/targets.rs`, `magnet`.
#![no_main]

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::magnet(data));
