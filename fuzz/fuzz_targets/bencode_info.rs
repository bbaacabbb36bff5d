//! Fuzz target `bencode_info`: see `fuzz/targets.rs`, `bencode_info`.
#![no_main]

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::bencode_info(data));
