#!/usr/bin/env python3
"""Fails when a function in the given crates is 80 lines or longer.

Reads rustfmt-formatted code: a function runs from its `fn` line to the
first line that closes it at the same indentation. Test modules (from
`#[cfg(test)]` on) are left out. Usage: function_length.py LIMIT dir ...
"""
import glob
import os
import re
import sys

FN = re.compile(r"^(\s*)(pub(\([^)]*\))? )?(const )?(async )?(unsafe )?(extern \"C\" )?fn (\w+)")


def long_functions(src, limit):
    for path in sorted(glob.glob(os.path.join(src, "**", "*.rs"), recursive=True)):
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("#[cfg(test)]")[0].split("\n")
        for i, line in enumerate(lines):
            m = FN.match(line)
            if not m:
                continue
            indent, name = m.group(1), m.group(8)
            for j in range(i, len(lines)):
                text = lines[j]
                if text.rstrip().endswith(";") and "{" not in "".join(lines[i:j + 1]):
                    break  # a declaration without a body
                if text == indent + "}" or (j == i and text.rstrip().endswith("}")):
                    length = j - i + 1
                    if length >= limit:
                        yield path, i + 1, name, length
                    break


def main():
    limit = int(sys.argv[1])
    found = [hit for src in sys.argv[2:] for hit in long_functions(src, limit)]
    for path, line, name, length in found:
        print(f"{path}:{line}: fn {name} is {length} lines (limit {limit - 1})")
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
