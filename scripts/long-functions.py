#!/usr/bin/env python3
"""Lists functions in src/ longer than a limit (default 100 lines) and files over ~800 lines.

A function counts from its `fn` line to its closing brace (brace matching that skips strings,
chars and comments). A function whose doc comment says why it is long (it gives its length,
"~150 lines: …", or says "hence its length" / "on purpose") is listed as explained. Exit code 1
when an unexplained one is found.
    scripts/long-functions.py [--limit 100] [--file-limit 800]
"""
import argparse
import pathlib
import re
import sys

FN = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+|async\s+|unsafe\s+)*fn\s+(\w+)")


def strip(line, state):
    """The line with strings, chars and comments blanked; state carries block comments."""
    out, i = [], 0
    while i < len(line):
        if state["block"]:
            j = line.find("*/", i)
            if j < 0:
                return "".join(out), state
            state["block"], i = False, j + 2
            continue
        c = line[i]
        if line.startswith("//", i):
            break
        if line.startswith("/*", i):
            state["block"], i = True, i + 2
            continue
        if c == '"':
            j = i + 1
            while j < len(line) and line[j] != '"':
                j += 2 if line[j] == "\\" else 1
            i = j + 1
            continue
        if c == "'" and re.match(r"'(\\.|[^\\'])'", line[i:]):
            i += len(re.match(r"'(\\.|[^\\'])'", line[i:]).group(0))
            continue
        out.append(c)
        i += 1
    return "".join(out), state


def functions(path):
    lines = path.read_text().splitlines()
    state = {"block": False}
    clean = []
    for line in lines:
        s, state = strip(line, state)
        clean.append(s)
    for n, line in enumerate(lines):
        m = FN.match(line)
        if not m:
            continue
        depth, opened = 0, False
        for k in range(n, len(lines)):
            for ch in clean[k]:
                if ch == "{":
                    depth, opened = depth + 1, True
                elif ch == "}":
                    depth -= 1
            if opened and depth == 0:
                break
            if not opened and clean[k].rstrip().endswith(";"):
                break
        if not opened:
            continue
        doc = []
        j = n - 1
        while j >= 0 and (lines[j].strip().startswith("///") or lines[j].strip().startswith("#[")):
            doc.append(lines[j])
            j -= 1
        reason = re.compile(r"~\d+ lines|hence its length|on purpose")
        yield m.group(4), n + 1, k - n + 1, any(reason.search(d) for d in doc)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--file-limit", type=int, default=800)
    a = ap.parse_args()
    root = pathlib.Path(__file__).resolve().parent.parent / "src"
    bad = 0
    for path in sorted(root.rglob("*.rs")):
        rel = path.relative_to(root.parent)
        n = len(path.read_text().splitlines())
        if n > a.file_limit:
            print(f"{rel}: {n} lines (file)")
        for name, line, length, explained in functions(path):
            if length > a.limit:
                tag = "explained" if explained else "LONG"
                bad += not explained
                print(f"{rel}:{line}: fn {name} {length} lines ({tag})")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
