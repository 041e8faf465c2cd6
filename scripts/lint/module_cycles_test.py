#!/usr/bin/env python3
"""Checks module_cycles.py on planted crates: a circle after a test-only
`use` is found, grouped imports count, test code never makes a circle."""
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def check(files):
    with tempfile.TemporaryDirectory() as src:
        for name, text in files.items():
            path = os.path.join(src, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        run = subprocess.run([sys.executable, os.path.join(HERE, "module_cycles.py"), src],
                             capture_output=True, text=True, check=False)
        return run.returncode


ROOT = "mod a;\nmod b;\nmod c;\n"
CASES = [
    ("a circle after a test-only use", 1, {
        "lib.rs": ROOT,
        "a.rs": "#[cfg(test)]\nuse std::fmt;\nuse crate::b::X;\n",
        "b.rs": "// crate::c in a comment\nfn f() { crate::a::g(); }\n",
        "c.rs": "",
    }),
    ("a circle through a grouped import and a child module", 1, {
        "lib.rs": ROOT,
        "a.rs": "mod inner;\n",
        "a/inner.rs": "use crate::{c::Y, b};\n",
        "b.rs": "",
        "c.rs": "pub(crate) fn y() -> &'static str { \"crate::b\"; crate::a::z() }\n",
    }),
    ("test code, strings and comments make no circle", 0, {
        "lib.rs": ROOT,
        "a.rs": "use crate::b;\n#[cfg(test)]\nmod tests { use crate::c; }\n",
        "b.rs": "const S: &str = \"crate::a\"; /* crate::a */\n#[cfg(test)]\nmod b_tests;\n",
        "b/b_tests.rs": "use crate::a;\n",
        "c.rs": "use crate::a;\nfn f<'x>(s: &'x str) -> char { '{' }\n",
    }),
]

failed = False
for name, want, files in CASES:
    got = check(files)
    if got != want:
        failed = True
        print(f"module_cycles.py: {name}: exit {got}, want {want}")
sys.exit(1 if failed else 0)
