"""sections: the parts of bench/RESULTS.md that one `scripts/bench` run rewrites.

RESULTS.md starts with the loopback report (bench.py), followed by sections,
each between two marker lines:

    <!-- BEGIN NAME section (scripts/bench FLAG rewrites it) -->
    ...
    <!-- END NAME section -->

A run rewrites only its own section (`write`) and keeps every other one;
the loopback report, which has no markers, keeps them all (`keep_all`).
Names in use: internet-swarm (--internet), transports (--transports),
transports-limited (--transports --tr-rate-mbit N), gateway (--gateway),
v2 (--v2), compare (--compare REV).
"""

import os
import re

MARKED = re.compile(r"<!-- BEGIN (\S+) section [^\n]*?-->.*?<!-- END \1 section -->", re.S)


def begin(name, flag):
    return f"<!-- BEGIN {name} section (scripts/bench {flag} rewrites it) -->"


def end(name):
    return f"<!-- END {name} section -->"


def all_sections(text):
    """[(name, text of the section, markers included)] in the order they appear."""
    return [(m.group(1), m.group(0)) for m in MARKED.finditer(text)]


def extract(text, name):
    """The section NAME of a RESULTS.md text (markers included), or ""."""
    for n, sec in all_sections(text):
        if n == name:
            return sec
    return ""


def keep_all(old, new):
    """`new` (a loopback report, no markers) followed by every section of `old`."""
    secs = [s for _, s in all_sections(old)]
    if not secs:
        return new
    return new.rstrip("\n") + "\n\n" + "\n\n".join(secs) + "\n"


def write(path, name, section):
    """Put `section` (markers included) into the file at `path` in place of
    its section NAME, or at the end; everything else is kept."""
    old = open(path).read() if os.path.exists(path) else ""
    prev = extract(old, name)
    if prev:
        text = old.replace(prev, section.strip("\n"))
    elif old:
        text = old.rstrip("\n") + "\n\n" + section.strip("\n") + "\n"
    else:
        text = "# btfs-mount benchmark results\n\n" + section.strip("\n") + "\n"
    with open(path, "w") as f:
        f.write(text)
