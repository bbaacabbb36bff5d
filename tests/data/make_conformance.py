#!/usr/bin/python3
"""Writes the expected results that tests/conformance.rs checks.

Inputs:
  ../shared/torrents/libtorrent/*.torrent   libtorrent's crafted test torrents
  ../shared/torrents/info_of.py             finds the exact `info` byte span
  python3-libtorrent 2.0.8 (Debian)         lt.torrent_info(d4:info<bytes>e)
  ../shared/torrents/EXPECTATIONS.md        the table; encoded below by hand

Outputs (tab-separated, one header line each):
  tests/data/conformance.tsv        one row per torrent file
  tests/data/conformance_files.tsv  one row per entry of each torrent btfs loads

Each row says where its expectation comes from:
  libtorrent-2.0.8    measured here; current libtorrent agrees (EXPECTATIONS.md)
  current-libtorrent  2.0.8 differs and we follow current libtorrent's
                      expectation (EXPECTATIONS.md, "Where 2.0.8 and current
                      libtorrent differ")
  btfs                a deliberate difference from current libtorrent; every
                      such file is listed with its reason in tests/conformance.rs

Run from the crate root:  /usr/bin/python3 tests/data/make_conformance.py
"""

import hashlib
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.path.join(ROOT, "..", "shared", "torrents")
sys.path.insert(0, SHARED)

import info_of  # noqa: E402
import libtorrent as lt  # noqa: E402

TORRENTS = os.path.join(SHARED, "libtorrent")
OUT = os.path.join(ROOT, "tests", "data")

# Files btfs refuses, with the text its error must contain (the field, as
# EXPECTATIONS.md's btfs column names it).
REFUSE = {
    # E. invalid v1 metadata
    "bad_name.torrent": "`name`",
    "invalid_file_size.torrent": "length`",
    "invalid_info.torrent": "not a dictionary",
    "invalid_name.torrent": "`name`",
    "invalid_path_list.torrent": ".path`",
    "invalid_piece_len.torrent": "`piece length`",
    "invalid_pieces.torrent": "`pieces`",
    "invalid_symlink.torrent": ".path`",
    "many_pieces.torrent": "too many pieces",
    "missing_path_list.torrent": ".path`",
    "missing_piece_len.torrent": "`piece length`",
    "negative_file_size.torrent": "length`",
    "negative_piece_len.torrent": "`piece length`",
    "negative_size.torrent": "`length`",
    "no_files.torrent": "`files`",
    "no_name.torrent": "`name`",
    "unaligned_pieces.torrent": "`pieces`",
    "zero.torrent": "`length`",
    "zero2.torrent": "`length`",
    # D. current libtorrent refuses it; 2.0.8 loads it
    "duplicate_files2.torrent": "too many duplicate file names",
    # I. invalid hybrids and strict bencoding
    "v2_bad_file_alignment.torrent": "`file tree`",
    "v2_mismatching_metadata.torrent": "`file tree`",
    "v2_invalid_file.torrent": "`file tree`",
    "v2_deep_recursion.torrent": "nesting",
    "v2_overlong_integer.torrent": "canonical",
    "v2_unordered_files.torrent": "canonical",
    # I. invalid v2-only info dicts (libtorrent's finer errors all name a field)
    "v2_empty_filename.torrent": "`file tree`",
    "v2_invalid_pad_file.torrent": "`file tree`",
    "v2_large_file.torrent": "`file tree`",
    "v2_large_offset.torrent": "too many pieces",
    "v2_missing_file_root_invalid_symlink.torrent": "`file tree`",
    "v2_no_power2_piece.torrent": "`piece length`",
    "v2_piece_size.torrent": "`piece length`",
    "v2_zero_root.torrent": "`file tree`",
    "v2_zero_root_small.torrent": "`file tree`",
}

# Current libtorrent's expected entries where 2.0.8 differs (EXPECTATIONS.md),
# or where its sanitizer gives a result its tests do not check but 2.0.8's
# differs (backslash_path, invalid_filename2). (path, size, pad, symlink)
CURRENT = {
    "slash_path.torrent": [("temp/_/_/bar", 425, False, None)],
    "slash_path2.torrent": [("temp/abc....def/_/bar", 425, False, None)],
    "backslash_path.torrent": [("temp/_/_/bar", 425, False, None)],
    "invalid_directory_name.torrent": [
        ("test2/_/foo", 51200, False, None),
        ("test2/_/foo.1", 14336, False, None),
    ],
    "invalid_filename2.torrent": [
        ("est2/f", 51200, False, None),
        ("est2/_/_", 14335, False, None),
        ("est2/_/_.1", 1, False, None),
    ],
    "symlink_filtered_path.torrent": [
        ("temp/a/_/bar", 32, False, None),
        ("temp/a/_/foo", 0, False, "temp/a/_/bar"),
    ],
    # `//` and `\` both sanitize to `_`; 2.0.8 turns `\` into an empty
    # component (EXPECTATIONS.md, group C)
    "v2_invalid_filename2.torrent": [
        ("test/_", 1048576, False, None),
        ("test/_.1", 1048576, False, None),
        ("test/stress_test2", 1048576, False, None),
    ],
}
# Deliberate differences from current libtorrent for files btfs loads:
# a pad file without `path` is placed under the torrent's directory.
BTFS_PATHS = {
    "pad_file_no_path.torrent": {".pad/2124": "temp/.pad/2124"},
    # an element that is not UTF-8 is shown in a lossless escape (issue 7);
    # libtorrent shows `_estMB`
    "v2_invalid_filename.torrent": {"_estMB": "\\x82est\\x2fMB"},
}
BTFS_NAMES = {"v2_invalid_filename.torrent": "\\x82est\\x2fMB"}
# Deliberate differences in the order of entries: a hybrid is listed in its
# v1 `files` order, so an empty file keeps its v1 place and offset (libtorrent
# lists the v2 layout, where the empty file comes after the pad file).
# (path, size, offset, pad, symlink)
BTFS_ENTRIES = {
    "empty-files-2.torrent": [
        ("test/1-small", 512, 0, False, None),
        ("test/2-empty", 0, 512, False, None),
        ("test/.pad/15872", 15872, 512, True, None),
        ("test/3-large", 51200, 16384, False, None),
        ("test/4-empty", 0, 67584, False, None),
        ("test/5-empty", 0, 67584, False, None),
        ("test/6-empty", 0, 67584, False, None),
    ],
}


def lt_load(info):
    """2.0.8's view of the info dict alone: (error, name, pl, n, total, entries)."""
    try:
        ti = lt.torrent_info(b"d4:info" + info + b"e")
    except Exception as e:  # noqa: BLE001 - the binding raises RuntimeError
        return str(e), None
    fs = ti.files()
    entries = []
    for i in range(fs.num_files()):
        flags = fs.file_flags(i)
        pad = bool(flags & lt.file_storage.flag_pad_file)
        link = fs.symlink(i) if flags & lt.file_storage.flag_symlink else None
        entries.append((fs.file_path(i), fs.file_size(i), fs.file_offset(i), pad, link))
    v2_only = not ti.info_hashes().has_v1()
    if ti.info_hashes().has_v2():
        assert ti.info_hashes().v2.to_bytes() == hashlib.sha256(info).digest()
    return None, (ti.name(), ti.piece_length(), ti.num_pieces(), ti.total_size(), entries, v2_only)


def clean(s):
    assert "\t" not in s and "\n" not in s, s
    return s


def main():
    rows = []
    file_rows = []
    for fname in sorted(os.listdir(TORRENTS)):
        buf = open(os.path.join(TORRENTS, fname), "rb").read()
        try:
            start, end = info_of.info_span(buf)
        except info_of.BencodeError:
            rows.append([fname, "-", "-", "-", "none", "no info dictionary", "libtorrent-2.0.8", "torrent file is not a dictionary", "-"])
            continue
        info = buf[start:end]
        sha1 = hashlib.sha1(info).hexdigest()
        sha256 = hashlib.sha256(info).hexdigest() if b"12:meta versioni2e" in info else "-"
        err, loaded = lt_load(info)
        lt_col = "fails: " + err if err else "loads"
        if fname in REFUSE:
            source = "current-libtorrent" if loaded else "libtorrent-2.0.8"
            rows.append([fname, start, end, sha1, "refuse", REFUSE[fname], source, lt_col, sha256])
            continue
        if loaded is None:
            raise SystemExit(f"{fname}: 2.0.8 refuses it ({err}) and the table has no entry")
        name, pl, n, total, entries, v2_only = loaded
        source = "libtorrent-2.0.8"
        single = len([e for e in entries if not e[3]]) == 1 and "/" not in entries[0][0]
        if v2_only and single and entries[-1][3]:
            # a single-file v2 torrent has no pad file: the `.pad` entry
            # 2.0.8 lists under the file's own name is a 2.0.8 artefact
            # (EXPECTATIONS.md, group H); multi-file v2 torrents keep their
            # tail pad, as both 2.0.8 and current libtorrent lay them out
            source = "current-libtorrent"
            entries = entries[:-1]
            total = entries[-1][2] + entries[-1][1]
        expected = [(p, size, pad, link) for (p, size, _off, pad, link) in entries]
        offsets = [off for (_p, _s, off, _pad, _l) in entries]
        if fname in CURRENT:
            expected = CURRENT[fname]
            assert len(expected) == len(entries), fname
            source = "current-libtorrent"
        if fname in BTFS_PATHS:
            remap = BTFS_PATHS[fname]
            expected = [(remap.get(p, p), s, pad, link) for (p, s, pad, link) in expected]
            source = "btfs"
        if fname in BTFS_NAMES:
            name = BTFS_NAMES[fname]
        if fname in BTFS_ENTRIES:
            full = BTFS_ENTRIES[fname]
            assert sorted(e[0] for e in full) == sorted(e[0] for e in expected), fname
            expected = [(p, size, pad, link) for (p, size, _o, pad, link) in full]
            offsets = [o for (_p, _s, o, _pad, _l) in full]
            source = "btfs"
        rows.append([fname, start, end, sha1, "load", f"{name}|{pl}|{n}|{total}", source, lt_col, sha256])
        for i, ((p, size, pad, link), off) in enumerate(zip(expected, offsets)):
            file_rows.append([fname, i, clean(p), size, off, "pad" if pad else "-", clean(link) if link else "-"])

    with open(os.path.join(OUT, "conformance.tsv"), "w", encoding="utf-8") as f:
        f.write("# generated by tests/data/make_conformance.py; do not edit by hand\n")
        f.write("file\tinfo_start\tinfo_end\tsha1\texpect\tdetail\tsource\tlibtorrent_2_0_8\tsha256\n")
        for r in rows:
            f.write("\t".join(clean(str(c)) for c in r) + "\n")
    with open(os.path.join(OUT, "conformance_files.tsv"), "w", encoding="utf-8") as f:
        f.write("# generated by tests/data/make_conformance.py; do not edit by hand\n")
        f.write("file\tindex\tpath\tlength\toffset\tpad\tsymlink\n")
        for r in file_rows:
            f.write("\t".join(str(c) for c in r) + "\n")
    print(f"{len(rows)} torrents, {len(file_rows)} entries", file=sys.stderr)


if __name__ == "__main__":
    main()
