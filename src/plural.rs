//! Counts in messages people read: `1 peer`, `2 peers`, `0 peers`.

use std::fmt::Display;

/// `n` followed by `one` when `n` is 1, else by `many`: `count(1, "peer",
/// "peers")` is `"1 peer"`, `count(0, "peer", "peers")` is `"0 peers"`.
/// Both forms are given, so irregular plurals (`entry`/`entries`) need no
/// rule.
pub fn count<T: Display + PartialEq + From<u8>>(n: T, one: &str, many: &str) -> String {
    if n == T::from(1) {
        format!("{n} {one}")
    } else {
        format!("{n} {many}")
    }
}

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn one_is_singular_everything_else_plural() {
        assert_eq!(count(1usize, "peer", "peers"), "1 peer");
        assert_eq!(count(0usize, "peer", "peers"), "0 peers");
        assert_eq!(count(2u32, "file", "files"), "2 files");
        assert_eq!(count(1u64, "entry", "entries"), "1 entry");
        assert_eq!(count(11u64, "entry", "entries"), "11 entries");
    }
}
