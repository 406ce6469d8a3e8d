#!/usr/bin/env python3
"""Fail if the lib's modules import each other in a cycle.

Parses `use crate::...` trees and `crate::a::b` paths in src/ (comments and
`#[cfg(test)]` modules are not exempt: a test module is part of its parent) and
builds two kinds of graph: between top-level modules of the lib (`crate::x`),
and between sibling submodules of one parent (`crate::p::x` -> `crate::p::y`,
also seen from `super::y` inside p). Any strongly connected component with more
than one node is a cycle, listed with the imports that make it; a few upward imports
are refused outright (FORBIDDEN). src/main.rs and
src/cli/ are the binary and are not part of the lib.
"""
import os
import re
import sys
from collections import defaultdict

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")


def module_path(rel):
    """src-relative file path -> module path list, e.g. data/mod.rs -> ['data']."""
    parts = rel[:-3].split(os.sep)
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return parts


TOKEN = re.compile(
    r'//[^\n]*|/\*.*?\*/|r(#*)".*?"\1|"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])\'',
    re.S,
)


# Imports that would point up even without closing a cycle yet: the layers a job spec's
# sections live in do not see the composing `config`, and the services do not see `grpc`.
FORBIDDEN = [
    ("data", "config"),
    ("model", "config"),
    ("method", "config"),
    ("jobs", "grpc"),
    ("restore", "grpc"),
    # quality (PSNR/SSIM) is a leaf; a model artifact carries its JobSpec, so it sits above
    # config, and inference loads artifacts.
    ("quality", "data"),
    ("config", "artifact"),
    ("config", "infer"),
    ("artifact", "infer"),
    ("artifact", "train"),
]


def strip_comments(text):
    """Blank out comments, strings and char literals in one pass."""
    return TOKEN.sub(lambda m: "" if m.group(0).startswith("/") else '""', text)


def expand_use(tree):
    """Expand a `use` tree like `crate::{a::{b, c}, d}` into paths."""
    tree = re.sub(r"\s+", "", tree)
    out = []

    def go(prefix, t):
        i = t.find("{")
        if i < 0:
            out.append(prefix + t)
            return
        head, body = t[:i], t[i + 1 : t.rfind("}")]
        depth, start = 0, 0
        for j, ch in enumerate(body + ","):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == "," and depth == 0:
                part = body[start:j]
                if part:
                    go(prefix + head, part)
                start = j + 1

    go("", tree)
    return out


def paths_in(text, modpath):
    """Absolute module paths (lists) this file refers to."""
    found = []
    for m in re.finditer(r"\buse\s+([^;]+);", text):
        for p in expand_use(m.group(1)):
            found.append(p)
    for m in re.finditer(r"(?<![\w:])((?:crate|super)(?:::\w+)+)", text):
        found.append(m.group(1))
    result = []
    for p in found:
        segs = [s.split(" as ")[0] for s in p.split("::")]
        segs = [s for s in segs if s]
        if not segs:
            continue
        if segs[0] == "crate":
            result.append(segs[1:])
        elif segs[0] == "super":
            base = list(modpath)
            while segs and segs[0] == "super":
                base = base[:-1]
                segs = segs[1:]
            result.append(base + segs)
    return result


def sccs(graph):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def main():
    modules = set()
    files = []
    for dirpath, _, names in os.walk(ROOT):
        for n in names:
            if n.endswith(".rs"):
                rel = os.path.relpath(os.path.join(dirpath, n), ROOT)
                if rel == "main.rs" or rel.startswith("cli" + os.sep):
                    continue
                mp = module_path(rel)
                modules.add(tuple(mp))
                files.append((rel, mp))
    # every prefix of a module path is a module too
    for mp in list(modules):
        for i in range(1, len(mp)):
            modules.add(mp[:i])

    # edges[(parent)] : graph between children of parent; witness lines
    edges = defaultdict(lambda: defaultdict(set))
    why = defaultdict(set)
    for rel, mp in files:
        with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
            text = strip_comments(f.read())
        for target in paths_in(text, mp):
            # longest module prefix of target
            t = list(target)
            while t and tuple(t) not in modules:
                t.pop()
            if not t:
                continue
            # common prefix of source module and target module
            k = 0
            while k < min(len(mp), len(t)) and mp[k] == t[k]:
                k += 1
            if k >= len(mp) or k >= len(t):
                continue  # ancestor/descendant: not a sibling edge
            parent = tuple(mp[:k])
            a, b = mp[k], t[k]
            edges[parent][a].add(b)
            why[(parent, a, b)].add(rel)

    failed = False
    for parent in sorted(edges):
        for comp in sccs(edges[parent]):
            failed = True
            where = "crate" if not parent else "crate::" + "::".join(parent)
            print(f"cycle in {where}: {' <-> '.join(comp)}")
            for a in comp:
                for b in sorted(edges[parent][a]):
                    if b in comp:
                        files_ = ", ".join(sorted(why[(parent, a, b)]))
                        print(f"  {a} -> {b}  ({files_})")
    for a, b in FORBIDDEN:
        if b in edges[()].get(a, ()):
            failed = True
            print(f"forbidden import: {a} -> {b}  ({', '.join(sorted(why[((), a, b)]))})")
    if failed:
        return 1
    print(f"no import cycles ({len(files)} files, {len(modules)} modules)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
