"""The README and docs say what the code does: cited config files exist and load, the search
shortlist is the code's, and the configuration reference lists the schema's own defaults."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from calm.config import ExperimentConfig, load
from calm.search.searcher import DEFAULT_SHORTLIST

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
CONFIG_PATH = re.compile(r"configs/[\w./*{}-]+?\.yaml")


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def cited_configs() -> list[tuple[str, str]]:
    return sorted({(doc.name, m) for doc in DOCS for m in CONFIG_PATH.findall(_text(doc))})


def test_the_docs_cite_config_files_at_all():
    # the pattern finds what the README cites; an empty list would make the tests below vacuous
    names = {path for _, path in cited_configs()}
    assert {"configs/msrvtt.yaml", "configs/synthetic/captioning-baseline.yaml",
            "configs/experiments/alignment.yaml"} <= names


@pytest.mark.parametrize(("doc", "path"), cited_configs())
def test_every_cited_config_file_exists_and_loads(doc, path):
    assert not set(path) & set("*{}"), f"{doc} cites {path}: name the files themselves"
    file = REPO / path
    assert file.is_file(), f"{doc} cites {path}, which does not exist"
    if path.startswith("configs/experiments/"):
        from calm.experiments.grid import load_grid

        load_grid(file)
    else:
        load(ExperimentConfig, file, allow_missing=True)


def test_the_captioning_baseline_config_is_the_calm_one_without_alignment():
    base = yaml.safe_load(_text(REPO / "configs/synthetic/captioning-baseline.yaml"))
    calm = yaml.safe_load(_text(REPO / "configs/synthetic/captioning-calm.yaml"))
    assert base["model"]["alignment"] == {"name": "none"}
    assert calm["model"]["alignment"] == {"name": "vae"}
    base["model"].pop("alignment"), calm["model"].pop("alignment")
    assert base == calm


def test_the_search_shortlist_in_the_readme_is_the_code_default():
    text = _text(REPO / "README.md")
    cited = re.findall(r"shortlist of ([\d,]+) videos", text) + re.findall(
        r"\(shortlist ([\d,]+)\)", text)
    assert cited, "the README no longer says how large the search shortlist is"
    assert {int(n.replace(",", "")) for n in cited} == {DEFAULT_SHORTLIST}


def _split_top_level(cell: str) -> list[str]:
    """'[384], [384]' -> ['[384]', '[384]']: commas inside brackets do not split."""
    parts, depth, current = [], 0, ""
    for ch in cell:
        depth += ch in "[{" and 1 or (-1 if ch in "]}" else 0)
        if ch == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    return [*parts, current.strip()]


def _value(text: str):
    if text.startswith('"') and text.endswith('"'):
        return text[1:-1]
    try:
        return float(text) if re.fullmatch(r"-?\d+(\.\d*)?e-?\d+", text) else yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def reference_rows() -> list[tuple[str, str]]:
    """(dotted key, default as written) of every row of the README's configuration reference."""
    text = _text(REPO / "README.md")
    table = text.split("## Configuration reference", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        keys = re.findall(r"`([\w.]+)`", cells[0])
        section = keys[0].rsplit(".", 1)[0] if "." in keys[0] else ""
        full = [keys[0]] + [k if "." in k else f"{section}.{k}" for k in keys[1:]]
        defaults = _split_top_level(cells[1]) if len(full) > 1 else [cells[1]]
        if defaults == ["—"]:  # one dash for the whole row: none of them has a default
            defaults *= len(full)
        assert len(defaults) == len(full), line
        rows += list(zip(full, defaults))
    return rows


def _schema_default(key: str):
    value = ExperimentConfig()
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _comparable(value):
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return list(value) if isinstance(value, tuple) else value


def test_the_configuration_reference_covers_many_keys():
    assert len(reference_rows()) > 50


@pytest.mark.parametrize(("key", "written"), reference_rows())
def test_the_configuration_reference_lists_the_schema_default(key, written):
    if written == "—":  # no default: the user gives it
        assert _schema_default(key) is None
        return
    assert _comparable(_schema_default(key)) == _value(written), (key, written)


# ---- experiment tables rendered from committed results (issue 20) -------------------------------

REPO = Path(__file__).resolve().parents[1]


def test_rendered_blocks_are_rewritten_from_their_file(tmp_path):
    from calm.experiments.docs_tables import blocks, refreshed, render
    from calm.io import write_json_atomic

    summary = {"command": "calm experiment ...", "finished_runs": 0}
    write_json_atomic(tmp_path / "r.json", summary)
    doc = ("# Results\n\ntext before\n<!-- rendered from r.json -->\nstale numbers\n"
           "<!-- end of rendered tables -->\ntext after\n")
    out = refreshed(doc, tmp_path)
    assert "stale numbers" not in out and "text before" in out and "text after" in out
    [(path, body)] = blocks(out)
    assert path == "r.json" and body == render(summary)
    assert refreshed(out, tmp_path) == out  # idempotent


def test_render_moves_headings_down_into_a_section(tmp_path):
    from calm.experiments.docs_tables import render
    from calm.experiments.results import summarize
    from tests.test_experiment import _fake_run, _variants

    grid = _variants(tmp_path, seeds=[0], variants={"a": {}, "b": {}})
    summary = summarize(grid, {(c, 0): _fake_run(c, 0, [1, 0]) for c in ("a", "b")})
    text = render(summary)
    assert text.startswith("### calm experiment: grid")
    assert "#### msrvtt* (2 test queries)" in text and "\n## " not in text


def test_the_results_document_matches_its_committed_experiment_files():
    """No number of an experiment table in docs/results.md is typed by hand: each block is what
    its docs/experiments/<grid>.json renders to, and each file says where its recipe was chosen."""
    from calm.experiments.docs_tables import blocks, render
    from calm.io import read_json

    found = blocks((REPO / "docs" / "results.md").read_text())
    assert found, "docs/results.md embeds no rendered experiment block"
    for path, body in found:
        summary = read_json(REPO / path)
        assert body == render(summary), f"{path}: run python -m calm.experiments.docs_tables"
        assert summary["tuning"]["split"] == "dev" and "benchmark_seed" in summary["tuning"]
