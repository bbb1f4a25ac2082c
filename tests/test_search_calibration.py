"""The search confidence: fitting P(top result is right), its ECE, the abstention threshold, and
`calm index --calibrate` on a split with known answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calm.search.calibration import (
    Calibrator,
    abstention_threshold,
    expected_calibration_error,
    fit_calibrator,
    fit_isotonic,
    query_features,
    reference_stats,
)


def _known_world(n: int, seed: int = 0):
    """Queries whose top result is right with a known probability sigmoid(2 z - 6)."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(0, 6, n)
    truth = 1 / (1 + np.exp(-(2 * z - 6)))
    right = (rng.random(n) < truth).astype(float)
    score = 0.2 + 0.02 * z + rng.normal(0, 0.002, n)
    margin = np.abs(rng.normal(0.01, 0.005, n))
    return np.stack([score, margin, z], 1), right, truth, np.arange(n) // 4


def test_ece_is_zero_for_a_calibrated_forecast_and_large_for_an_overconfident_one():
    prob = np.repeat([0.15, 0.55, 0.95], 20)
    right = np.concatenate([np.arange(20) < 3, np.arange(20) < 11, np.arange(20) < 19])
    assert expected_calibration_error(prob, right) == pytest.approx(0.0)
    assert expected_calibration_error(np.full(60, 0.99), right) == pytest.approx(0.99 - right.mean())


def test_the_fitted_probability_follows_the_true_one_and_transfers_to_new_queries():
    x, y, _, groups = _known_world(2000)
    cal = fit_calibrator(x, y, groups)
    assert cal.report["chosen"] in ("platt", "isotonic") and cal.method == cal.report["chosen"]
    assert cal.report["ece"][cal.method] == min(cal.report["ece"].values())
    x2, y2, truth2, _ = _known_world(2000, seed=1)
    p = cal.probability(x2)
    assert np.abs(p - truth2).mean() < 0.06
    assert expected_calibration_error(p, y2) < 0.05


def test_abstention_keeps_at_most_the_target_of_right_answers_and_measures_the_wrong_ones():
    x, y, _, groups = _known_world(1000)
    cal = fit_calibrator(x, y, groups, target=0.1)
    assert cal.report["abstain_correct"] <= 0.1
    assert cal.report["abstain_wrong"] > 0.5  # wrong answers sit at low z: most abstain
    x2, y2, _, _ = _known_world(1000, seed=2)
    below = cal.probability(x2) < cal.threshold
    assert below[y2 == 1].mean() < 0.15


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=10, max_size=200), st.floats(0.01, 0.5))
def test_the_threshold_leaves_at_most_the_target_share_of_right_answers_below_it(probs, target):
    prob = np.array(probs)
    right = np.arange(len(prob)) % 2 == 0
    t = abstention_threshold(prob, right, target)
    assert (prob[right] < t).mean() <= target + 1e-12


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(-5, 5), st.booleans()), min_size=2, max_size=60))
def test_isotonic_steps_are_monotone_and_keep_the_mean(pairs):
    x = np.array([p[0] for p in pairs])
    y = np.array([float(p[1]) for p in pairs])
    ends, values = fit_isotonic(x, y)
    assert np.all(np.diff(values) > 0) and np.all(np.diff(ends) >= 0)
    cal = Calibrator("isotonic", [0.0], [1.0], [1.0], 0.0, ends.tolist(), values.tolist())
    fitted = cal.probability(x[:, None])
    assert fitted.mean() == pytest.approx(y.mean())  # PAV preserves the total
    order = np.argsort(x)
    assert np.all(np.diff(fitted[order]) >= -1e-12)


def test_a_calibrator_survives_the_manifest_round_trip():
    x, y, _, groups = _known_world(300)
    cal = fit_calibrator(x, y, groups)
    again = Calibrator.from_json(json.loads(json.dumps(cal.to_json())))
    np.testing.assert_allclose(again.probability(x), cal.probability(x))
    assert again.threshold == cal.threshold


def test_a_split_with_only_right_or_too_few_answers_is_refused():
    x, y, _, groups = _known_world(100)
    with pytest.raises(ValueError, match="both right and wrong"):
        fit_calibrator(x, np.ones_like(y), groups)
    with pytest.raises(ValueError, match="at least"):
        fit_calibrator(x[:5], y[:5], groups[:5])


def test_features_are_score_margin_and_z_against_the_reference():
    reference = np.array([0.1, 0.2, 0.2, 0.3, 0.2, 0.25, 0.15])
    centre, spread = reference_stats(reference)
    assert centre == 0.2 and spread == pytest.approx(1.4826 * 0.05)
    f = query_features(0.5, 0.4, reference)
    np.testing.assert_allclose(f, [0.5, 0.1, 0.3 / spread])


# ---- calm index --calibrate on a split with known answers ---------------------------------------

COPY_OF = {"copies/v0_reencoded.mp4": "v0.mp4", "copies/v1_cut.mp4": "v1.mp4",
           "copies/v2_all.mp4": "v2.mp4"}


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """8 distinct scenes and 3 copies of them, indexed with --calibrate on a jsonl split that
    holds the 8 originals with 4 captions each."""
    from calm.cli.main import main as calm_main
    from calm.data.synthetic.copies import write_copy
    from tests.search_fixtures import tiny_checkpoint, write_scenes

    root = tmp_path_factory.mktemp("calibrated")
    library = root / "videos"
    originals = write_scenes(library, 8)
    for (name, source), kind in zip(COPY_OF.items(), ("reencode", "cut", "all")):
        write_copy(library / source, library / name, kind)
    split = root / "cal.jsonl"
    split.write_text("".join(json.dumps({"video": p.name, "split": "val", "captions": [
        f"scene {i} pans {w}" for w in ("left", "slowly", "across", "again")]}) + "\n"
        for i, p in enumerate(originals)))
    ckpt = tiny_checkpoint(root / "m.safetensors")
    args = ["index", "--checkpoint", str(ckpt), "--videos", str(library), "--out",
            str(root / "idx"), "--workers", "0", "--no-progress"]
    flags = ["--calibration-dataset", "jsonl", "--calibration-annotations", str(split),
             "--calibration-videos", str(library), "--calibration-split", "val"]
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert calm_main(args + flags) == 0
    return {"root": root, "library": library, "split": split, "ckpt": ckpt, "args": args,
            "printed": printed.getvalue()}


def test_calibrate_fits_on_the_split_stores_it_and_search_reports_the_probability(calibrated,
                                                                                  capsys):

    from calm.api import load
    from calm.cli.main import main as calm_main
    from calm.search import store
    from calm.search.searcher import Searcher

    out, split, library = calibrated["root"] / "idx", calibrated["split"], calibrated["library"]
    # the split's 8 videos compete with the index's other 3 (copies), not only with each other
    assert ("calibration on jsonl/val (32 captions searched among 11 videos: 8 of the split, 3 of "
            "the index; ") in calibrated["printed"]
    manifest = store.read_manifest(out)
    report = manifest.calibration["report"]
    # the labels are what the model itself ranks first: recomputed here from calm.load().score
    model = load(calibrated["ckpt"])
    lines = [json.loads(x) for x in split.read_text().splitlines()]
    texts = [c for line in lines for c in line["captions"]]
    truth = [i for i, line in enumerate(lines) for _ in line["captions"]]
    # among all 11 indexed videos; a copy ranked first is right, as search folds it in
    gallery = [line["video"] for line in lines] + list(COPY_OF)
    scores = model.score(texts, [library / name for name in gallery])
    best = [gallery[i] for i in scores.argmax(1).tolist()]
    right = [b == lines[t]["video"] or COPY_OF.get(b) == lines[t]["video"]
             for b, t in zip(best, truth)]
    assert report["top1_accuracy"] == pytest.approx(float(np.mean(right)))
    assert 0 < report["top1_accuracy"] < 1
    assert report["queries"] == 32 and report["collection"] == 11
    assert (report["split_videos"], report["competitors"], report["competitors_available"]) == \
        (8, 3, 3)
    assert set(report["ece"]) == {"platt", "isotonic"}
    assert report["abstain_correct"] <= 0.1 + 1e-9
    # search shows the stored calibrator's probability of its own features, and the threshold
    searcher = Searcher.open(out)
    result = searcher.search(texts[0], k=3)
    cal = searcher.calibrator
    features = np.array([result.confidence.features[k] for k in ("score", "margin", "z")])
    assert result.confidence.calibrated and result.confidence.threshold == cal.threshold
    assert result.confidence.probability == pytest.approx(float(cal.probability(features)[0]),
                                                          abs=1e-4)
    assert result.confident == (result.confidence.probability >= cal.threshold)
    assert calm_main(["search", "--index", str(out), texts[0], "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["confidence"]["calibrated"] and body["confidence"]["threshold"] == round(cal.threshold, 4)
    # an update without --calibrate keeps the calibration
    assert calm_main(calibrated["args"]) == 0
    assert store.read_manifest(out).calibration == manifest.calibration


def test_copies_come_back_inside_their_original_at_the_measured_threshold(calibrated):
    from calm.search.searcher import Searcher

    assert "near-duplicates: frame-mean cosine >=" in calibrated["printed"]
    searcher = Searcher.open(calibrated["root"] / "idx")
    measured = searcher.index.manifest.duplicates
    assert measured["threshold"] == searcher.duplicate_threshold and measured["copies"] == 8
    result = searcher.search("scene 3 pans left", k=11)
    listed = {h.path: h.duplicates for h in result.results}
    assert len(listed) == 8  # 11 videos, 3 of them copies
    for copy, source in COPY_OF.items():
        assert listed[source] == [copy]
    assert all(not listed[f"v{i}.mp4"] for i in range(3, 8))
    assert all("duplicates" in r for r in searcher.search("scene 0", k=3).to_json()["results"])
    # without folding, every copy is a result of its own
    plain = Searcher(searcher.index, searcher.scorer, duplicate_threshold=None)
    assert len(plain.search_encoded("q", searcher.encode_text(["scene 3"])[0], 11).results) == 11


def test_calibrate_without_a_validation_split_in_the_config_says_what_to_pass(calibrated, capsys,
                                                                              tmp_path):
    from calm.cli.main import main as calm_main

    assert calm_main(["index", "--checkpoint", str(calibrated["ckpt"]), "--videos",
                      str(calibrated["library"]), "--out", str(tmp_path / "idx"), "--calibrate",
                      "--no-progress"]) == 2
    assert "--calibration-annotations" in capsys.readouterr().err


def test_the_calibration_gallery_holds_the_index_videos_once_and_a_spread_sample_past_the_limit():
    from calm.search.calibrate import Collection, with_competitors
    from calm.search.searcher import MemoryIndex

    split = MemoryIndex(["/v/a.mp4", "/v/b.mp4"], {"mean": np.zeros((2, 3))}, {})
    paths = [Path(f"/v/{n}.mp4") for n in ("a", "c", "d", "b", "e", "f", "g")]
    collection = Collection(paths, {"mean": np.arange(21, dtype=float).reshape(7, 3),
                                    "extra": np.zeros((7, 1))})
    gallery, used, available = with_competitors(split, collection)
    assert gallery.paths == ["/v/a.mp4", "/v/b.mp4", "/v/c.mp4", "/v/d.mp4", "/v/e.mp4",
                             "/v/f.mp4", "/v/g.mp4"]  # a and b once, the split's rows first
    assert (used, available) == (5, 5) and set(gallery.arrays) == {"mean"}
    np.testing.assert_array_equal(gallery.arrays["mean"][2], [3, 4, 5])  # c's row
    sampled, used, available = with_competitors(split, collection, limit=3)
    assert (used, available) == (3, 5)
    assert sampled.paths[2:] == ["/v/c.mp4", "/v/e.mp4", "/v/g.mp4"]  # evenly spread
    assert with_competitors(split, None)[0] is split
