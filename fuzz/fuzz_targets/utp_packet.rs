//! Fuzz target `utp_packet`: see `fuzz/targets.rs`, `utp_packet`.
#![no_main]

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::utp_packet(data));
