#!/usr/bin/env python3
"""Fails when the top-level modules of a crate import each other in a circle.

Walks each crate's module tree the way the compiler does: from `lib.rs` and
`main.rs`, through every `mod name;` (and its `#[path = "..."]`) to
`name.rs` or `name/mod.rs`. Comments, strings and every item under
`#[cfg(test)]` (a `use`, a `mod tests { ... }`, a `mod x;` and its file)
are left out; what remains of a module and its children is its code. A
top-level module depends on another when its code names `crate::other`,
alone or in a group (`crate::{a, b::c}`).

Usage: module_cycles.py crates/x/src ...
"""
import os
import re
import sys

CFG_TEST = re.compile(r"#\[cfg\((all\()?test\b[^\]]*\]")
INNER_CFG_TEST = re.compile(r"#!\[cfg\((all\()?test\b[^\]]*\]")
MOD_DECL = re.compile(r"(?:#\[path\s*=\s*\"([^\"]+)\"\]\s*)?(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;")
PATH_ATTR = re.compile(r"#\[path\s*=\s*\"([^\"]+)\"\]")


def scrub(code):
    """The code without comments, and with string and char literals
    emptied (a `path` attribute keeps its string: it names a file)."""
    out, i, n = [], 0, len(code)
    while i < n:
        c = code[i]
        if code.startswith("//", i):
            while i < n and code[i] != "\n":
                i += 1
        elif code.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if code.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif code.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif re.match(r'b?r#*"', code[i:i + 20]) and (i == 0 or not (code[i - 1].isalnum() or code[i - 1] == "_")):
            m = re.match(r'(b?r)(#*)"', code[i:])
            end = code.find('"' + m.group(2), i + len(m.group(0)))
            end = n if end < 0 else end + 1 + len(m.group(2))
            out.append('""')
            i = end
        elif c == '"':
            start, i = i, i + 1
            while i < n and code[i] != '"':
                i += 2 if code[i] == "\\" else 1
            literal = code[start:i + 1]
            keep = "".join(out[-12:]).rstrip().endswith("=") and "path" in "".join(out[-12:])
            out.append(literal if keep else '""')
            i += 1
        elif c == "'":
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'", code[i:])
            if m:  # a char literal, not a lifetime
                out.append("' '")
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def item_end(code, i):
    """Where the item starting at `i` ends: after its `;`, or after the
    `}` that closes its first `{`."""
    depth = 0
    while i < len(code):
        c = code[i]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        elif c == ";" and depth == 0:
            return i + 1
        i += 1
    return i


def without_tests(code):
    """The code without its `#[cfg(test)]` items, and the names of the
    `mod x;` files those items declared."""
    kept, test_mods, i = [], set(), 0
    while True:
        m = CFG_TEST.search(code, i)
        if not m:
            kept.append(code[i:])
            return "".join(kept), test_mods
        kept.append(code[i:m.start()])
        j = m.end()
        while True:  # further attributes of the same item
            rest = code[j:]
            a = re.match(r"\s*#\[", rest)
            if not a:
                break
            j = item_end_bracket(code, j + a.end() - 1)
        end = item_end(code, j)
        decl = MOD_DECL.search(code[m.start():end])
        if decl and code[m.start():end].rstrip().endswith(";"):
            test_mods.add(decl.group(2))
        i = end


def item_end_bracket(code, i):
    """After the `]` that closes the `[` at `i`."""
    depth = 0
    while i < len(code):
        if code[i] == "[":
            depth += 1
        elif code[i] == "]":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return i


def module_code(path, is_root):
    """A module's own code (tests left out) and its children's files."""
    with open(path, encoding="utf-8") as f:
        code = scrub(f.read())
    if INNER_CFG_TEST.search(code):
        return "", []
    code, test_mods = without_tests(code)
    here = os.path.dirname(path)
    base = here if is_root or os.path.basename(path) == "mod.rs" else os.path.join(
        here, os.path.basename(path).removesuffix(".rs"))
    children = []
    for m in MOD_DECL.finditer(code):
        explicit, name = m.group(1), m.group(2)
        if name in test_mods:
            continue
        if explicit:
            children.append((name, os.path.join(here, explicit)))
            continue
        for candidate in (os.path.join(base, name + ".rs"), os.path.join(base, name, "mod.rs")):
            if os.path.exists(candidate):
                children.append((name, candidate))
                break
    return code, children


def crate_deps(root):
    """Top-level module -> the top-level modules its code names."""
    root_code, top = module_code(root, True)
    deps = {}
    for name, path in top:
        code, stack = "", [path]
        while stack:
            own, children = module_code(stack.pop(), False)
            code += own
            stack.extend(p for _, p in children)
        names = set(re.findall(r"crate::(\w+)", code))
        for group in re.findall(r"crate::\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}", code):
            depth, word = 0, ""
            for part in re.findall(r"\w+|[{},]", group):
                if part == "{":
                    depth += 1
                elif part == "}":
                    depth -= 1
                elif part == ",":
                    word = ""
                elif depth == 0 and not word:
                    word = part
                    names.add(part)
        deps[name] = names - {name, "self"}
    return {m: {d for d in ds if d in deps} for m, ds in deps.items()}


def cycles(graph):
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
    for root in ("lib.rs", "main.rs"):
        path = os.path.join(src, root)
        if not os.path.exists(path):
            continue
        for ring in cycles(crate_deps(path)):
            bad = True
            print(f"{path}: import circle " + " -> ".join(ring + (ring[0],)))
sys.exit(1 if bad else 0)
