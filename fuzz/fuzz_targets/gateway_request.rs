//! Fuzz target `gateway_request`: see `fuzz/targets.rs`, `gateway_request`.
#![no_main]

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::gateway_request(data));
