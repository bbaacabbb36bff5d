//! Fuzz target `hash_messages`: see `fuzz/targets.rs`, `hash_messages`.
#![no_main]

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::hash_messages(data));
