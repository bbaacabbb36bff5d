//! Encoding v1 info dictionaries (BEP 3), for seeding and for tests: the
//! counterpart of the parser in [`super`].

use super::sanitize;
use crate::bencode::Owned;

/// Smallest piece length [`choose_piece_length`] picks: 16 KiB.
pub const MIN_CHOSEN_PIECE_LENGTH: u64 = 16 * 1024;
/// Largest piece length [`choose_piece_length`] picks: 16 MiB.
pub const MAX_CHOSEN_PIECE_LENGTH: u64 = 16 * 1024 * 1024;
/// [`choose_piece_length`] doubles the piece length while there would be
/// more pieces than this.
pub const TARGET_MAX_PIECES: u64 = 2000;

/// Canonical raw info dictionary bytes (BEP 3; keys sorted, so the result
/// hashes the same wherever it is rebuilt).
///
/// - `files`: `(path components under the torrent root, length in bytes)`,
///   in order. One entry with an empty component list makes a single-file
///   torrent (`length` + `name`); anything else a multi-file torrent (`files`
///   list, each with `length` and `path`).
/// - `name`: the torrent name (the single file's name, or the root directory).
/// - `piece_length`: bytes per piece.
/// - `piece_hashes`: SHA-1 of each piece, concatenated into `pieces`.
///
/// Names and components are written as [`sanitize::raw_element`] gives
/// them: a name in the lossless `\xHH` escape of a non-UTF-8 name goes back
/// to its raw bytes, so what [`sanitize::filter`] showed round-trips.
///
/// The caller provides consistent values (one hash per piece of the
/// concatenated files); lengths above `i64::MAX` are clamped to it.
pub fn build_info(
    files: &[(Vec<String>, u64)],
    name: &str,
    piece_length: u64,
    piece_hashes: Vec<[u8; 20]>,
) -> Vec<u8> {
    let int = |n: u64| Owned::Int(i64::try_from(n).unwrap_or(i64::MAX));
    let pieces: Vec<u8> = piece_hashes.concat();
    let raw = |c: &str| Owned::from(sanitize::raw_element(c).into_owned());
    let mut d = Owned::dict()
        .insert("name", raw(name))
        .insert("piece length", int(piece_length))
        .insert("pieces", pieces);
    match files {
        [(path, len)] if path.is_empty() => d = d.insert("length", int(*len)),
        _ => {
            let list: Vec<Owned> = files
                .iter()
                .map(|(path, len)| {
                    Owned::dict()
                        .insert("length", int(*len))
                        .insert("path", Owned::List(path.iter().map(|c| raw(c)).collect()))
                })
                .collect();
            d = d.insert("files", list);
        }
    }
    d.encode()
}

/// A piece length for `total` bytes of content, like common torrent makers:
/// a power of two from 16 KiB to 16 MiB, the smallest that keeps the torrent
/// at or below 2000 pieces (so 1000 to 2000 pieces when the bounds allow).
pub fn choose_piece_length(total: u64) -> u64 {
    let mut pl = MIN_CHOSEN_PIECE_LENGTH;
    while total.div_ceil(pl) > TARGET_MAX_PIECES && pl < MAX_CHOSEN_PIECE_LENGTH {
        pl *= 2;
    }
    pl
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metainfo::Info;

    #[test]
    fn single_file_round_trip() {
        let raw = build_info(&[(vec![], 425)], "temp", 16384, vec![[7; 20]]);
        assert_eq!(
            raw,
            b"d6:lengthi425e4:name4:temp12:piece lengthi16384e6:pieces20:\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07e".to_vec()
        );
        let info = Info::from_bytes(&raw).unwrap();
        assert!(!info.multi_file);
        assert_eq!(info.files[0].path, vec!["temp"]);
        assert_eq!(info.piece_hash(0), [7; 20]);
    }

    #[test]
    fn multi_file_round_trip() {
        let files = vec![
            (vec!["foo".to_string(), "bar.txt".to_string()], 20000),
            (vec!["baz".to_string()], 0),
            (vec!["q".to_string()], 30000),
        ];
        let raw = build_info(
            &files,
            "root",
            16384,
            vec![[1; 20], [2; 20], [3; 20], [4; 20]],
        );
        let info = Info::from_bytes(&raw).unwrap();
        assert!(info.multi_file);
        assert_eq!(info.total_length, 50000);
        assert_eq!(info.num_pieces(), 4);
        let paths: Vec<String> = info.files.iter().map(|f| f.path.join("/")).collect();
        assert_eq!(paths, ["root/foo/bar.txt", "root/baz", "root/q"]);
        assert!(
            crate::bencode::decode(&raw, Default::default())
                .unwrap()
                .is_canonical()
        );
        // one file with a path is still a multi-file torrent
        let raw = build_info(&[(vec!["a".into()], 5)], "r", 16384, vec![[0; 20]]);
        assert!(Info::from_bytes(&raw).unwrap().multi_file);
    }

    #[test]
    fn piece_length_choice() {
        assert_eq!(choose_piece_length(0), 16384);
        assert_eq!(choose_piece_length(1), 16384);
        assert_eq!(choose_piece_length(2000 * 16384), 16384);
        assert_eq!(choose_piece_length(2000 * 16384 + 1), 32768);
        assert_eq!(choose_piece_length(1 << 30), 1 << 20); // 1024 pieces
        assert_eq!(choose_piece_length(u64::MAX), 16 << 20);
        for total in [1u64 << 25, 5_000_000_000, 123_456_789] {
            let n = total.div_ceil(choose_piece_length(total));
            assert!((1000..=2000).contains(&n), "{total}: {n}");
        }
    }
}
