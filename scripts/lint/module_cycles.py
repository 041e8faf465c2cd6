#!/usr/bin/env python3
"""Fails when the top-level modules of a crate import each other in a circle.

A module's dependencies are the `crate::name` paths in its code (comments
and `#[cfg(test)]` parts left out). Usage: module_cycles.py crates/x/src ...
"""
import glob
import os
import re
import sys


def cycles(src):
    deps = {}
    for path in glob.glob(os.path.join(src, "**", "*.rs"), recursive=True):
        top = os.path.relpath(path, src).split(os.sep)[0].removesuffix(".rs")
        with open(path, encoding="utf-8") as f:
            code = f.read().split("#[cfg(test)]")[0]
        code = "\n".join(l for l in code.split("\n") if not l.strip().startswith("//"))
        deps.setdefault(top, set()).update(d for d in re.findall(r"crate::(\w+)", code) if d != top)
    graph = {m: {d for d in ds if d in deps} for m, ds in deps.items()}
    found = set()

    def walk(node, path):
        for nxt in graph.get(node, ()):
            if nxt in path:
                ring = path[path.index(nxt):]
                i = ring.index(min(ring))
                found.add(tuple(ring[i:] + ring[:i]))
            elif len(path) < 10:
                walk(nxt, path + [nxt])

    for m in graph:
        walk(m, [m])
    return sorted(found)


bad = False
for src in sys.argv[1:]:
    for ring in cycles(src):
        bad = True
        print(f"{src}: import circle " + " -> ".join(ring + (ring[0],)))
sys.exit(1 if bad else 0)
