"""The experiment tables of docs/results.md, rendered from the committed `results.json` files.

A grid's `results.json` is copied to docs/experiments/<grid>.json (issue 20); a document embeds
its tables between two markers, so no number in the document is typed by hand:

    <!-- rendered from docs/experiments/tuning.json -->
    ... what `results.markdown` writes for that file, headings moved two levels down ...
    <!-- end of rendered tables -->

`python -m calm.experiments.docs_tables docs/results.md` rewrites every block from its file;
tests/test_docs.py fails when a block and its file disagree.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from calm.experiments.results import results_markdown
from calm.io import read_json, write_text_atomic

BLOCK = re.compile(r"(<!-- rendered from (?P<path>\S+) -->\n)(?P<body>.*?)(<!-- end of rendered "
                   r"tables -->)", re.S)


def render(summary: dict, levels: int = 2) -> str:
    """`results.md`'s text for `summary` with every heading `levels` deeper, to sit in a
    section."""
    text = results_markdown(summary)
    return re.sub(r"^(#+) ", lambda m: "#" * (len(m.group(1)) + levels) + " ", text,
                  flags=re.M).rstrip("\n") + "\n"


def blocks(text: str) -> list[tuple[str, str]]:
    """(path, body) of every rendered block in a document."""
    return [(m.group("path"), m.group("body")) for m in BLOCK.finditer(text)]


def refreshed(text: str, root: Path) -> str:
    """The document with every block rendered anew from its file (paths relative to `root`)."""
    return BLOCK.sub(lambda m: m.group(1) + render(read_json(root / m.group("path"))) + m.group(4),
                     text)


def main(argv: list[str]) -> int:
    root = Path.cwd()
    for name in argv or ["docs/results.md"]:
        path = Path(name)
        before = path.read_text()
        after = refreshed(before, root)
        if after != before:
            write_text_atomic(path, after)
        print(f"{path}: {len(blocks(after))} rendered block(s)"
              + (" rewritten" if after != before else ", unchanged"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
