//! Faults (issue 7, part 4).
#[path = "support/mod.rs"]
mod support;
