"""Which anchors are true of a synthetic clip / named by a caption, and the mAP that scores them."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calm.data.errors import DataError
from calm.data.synthetic import ANCHOR_LABELS, DOMAINS, Difficulty, generate
from calm.data.synthetic.anchor_truth import RULES, anchor_truth, caption_anchors, clip_anchors
from calm.data.synthetic.captions import clip_captions
from calm.data.synthetic.world import sample_clip
from calm.metrics.ranking import (
    average_precisions,
    mean_average_precision,
    random_average_precision,
)


def _names(indices) -> set[str]:
    return {ANCHOR_LABELS[i] for i in indices}


def test_every_anchor_label_has_a_rule():
    assert set(RULES) == set(ANCHOR_LABELS)
    with pytest.raises(DataError, match="Opening a door"):
        clip_anchors({"background": "sky", "main": {}, "second": None}, ["Opening a door"])


def test_clip_anchors_of_a_known_clip():
    clip = {"background": "night",
            "main": {"shape": "circle", "colour": "red", "size": "small", "motion": "left"},
            "second": {"shape": "star", "colour": "green", "size": "medium", "motion": "rotate"}}
    assert _names(clip_anchors(clip)) == {
        "Moving something to the left", "Moving something sideways", "Something spinning around",
        "A round object", "A pointy object", "A star-shaped thing", "Something colored red",
        "Something colored green", "Something very small", "A scene in the dark night",
        "Two things at once", "A round red object", "A green star-shaped thing",
        "Two things moving together", "Spinning a pointy thing", "Moving a round thing sideways",
    }
    alone = {"background": "grass", "second": None,
             "main": {"shape": "ring", "colour": "white", "size": "large", "motion": "stay"}}
    assert _names(clip_anchors(alone)) == {
        "Something holding still", "Nothing in motion", "A round object", "A hollow round thing",
        "Something colored white", "Something very large", "A scene on green grass",
        "A single thing alone",
    }


def test_a_caption_names_only_what_it_says():
    said = {"colour": "red", "motion": "bounce", "background": "grass", "second": {"shape": "bar"}}
    assert _names(caption_anchors(said)) == {
        "Something hopping up and down", "Something colored red", "A scene on green grass",
        "Something hopping on green grass", "A long thin thing", "Two things at once",
    }
    # a caption never establishes that a clip is alone or that nothing moves
    assert _names(caption_anchors({"shape": "square", "motion": "stay"})) == {
        "Something holding still", "A boxy object"}


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), domain=st.sampled_from(sorted(DOMAINS)))
def test_a_caption_names_a_subset_of_its_clips_anchors(seed, domain):
    rng = np.random.default_rng(seed)
    clip = sample_clip(rng, DOMAINS[domain], Difficulty())
    true = clip_anchors(clip.attributes())
    assert true
    for _, mention in clip_captions(rng, clip, Difficulty(), DOMAINS[domain], 4):
        assert caption_anchors(mention) <= true


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("truth")
    generate(root, scale="tiny", seed=2)
    return root


def test_anchor_truth_follows_the_callers_order(synth):
    meta = json.loads((synth / "msrvtt/metadata.json").read_text())
    items = meta["splits"]["test"][::-1]
    pairs = [(it["video_id"], t["text"]) for it in items for t in it["texts"][:2]]
    truth = anchor_truth(synth / "msrvtt/metadata.json", [it["video_id"] for it in items], pairs)
    assert truth.labels == ANCHOR_LABELS
    assert [set(s) for s in truth.videos] == [set(clip_anchors(it["attributes"])) for it in items]
    assert truth.video_matrix().shape == (len(items), len(ANCHOR_LABELS))
    assert truth.caption_matrix().sum() == sum(len(s) for s in truth.captions)
    by_text = {(it["video_id"], t["text"]): t["mention"] for it in items for t in it["texts"]}
    assert [set(s) for s in truth.captions] == [set(caption_anchors(by_text[p])) for p in pairs]


def test_a_didemo_paragraph_names_what_its_sentences_name(synth):
    item = json.loads((synth / "didemo/metadata.json").read_text())["splits"]["test"][0]
    paragraph = " ".join(t["text"] for t in item["texts"])
    truth = anchor_truth(synth / "didemo/metadata.json", [item["video_id"]],
                         [(item["video_id"], paragraph)])
    union = set().union(*(caption_anchors(t["mention"]) for t in item["texts"]))
    assert set(truth.captions[0]) >= union


def test_anchor_truth_errors_name_the_file(synth, tmp_path):
    path = synth / "msrvtt/metadata.json"
    with pytest.raises(DataError, match="metadata.json.*'video99999'"):
        anchor_truth(path, ["video99999"])
    vid = json.loads(path.read_text())["splits"]["test"][0]["video_id"]
    with pytest.raises(DataError, match="not one of its captions"):
        anchor_truth(path, [vid], [(vid, "a caption nobody wrote")])
    bad = tmp_path / "metadata.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="not a readable calm synth metadata"):
        anchor_truth(bad, [vid])


# ---- the metric -------------------------------------------------------------------------------


def test_average_precision_by_hand():
    # relevant at ranks 1 and 3: (1/1 + 2/3) / 2
    ap = average_precisions([[0.9, 0.5, 0.4, 0.1]], [[True, False, True, False]])
    assert ap[0] == pytest.approx((1 + 2 / 3) / 2)
    assert np.isnan(average_precisions([[1.0, 0.0]], [[False, False]])[0])


def test_ties_never_help():
    relevant = [[False, True, False, False]]
    assert average_precisions([[1.0, 1.0, 1.0, 1.0]], relevant)[0] == pytest.approx(1 / 4)
    assert average_precisions([[0.0, 1.0, 0.0, 0.0]], relevant)[0] == pytest.approx(1.0)


@pytest.mark.parametrize("m,k", [(1, 1), (1, 4), (2, 4), (3, 5), (5, 5)])
def test_random_average_precision_is_the_mean_over_all_orders(m, k):
    relevant = np.array([True] * m + [False] * (k - m))
    aps = [average_precisions(-np.array([perm], dtype=float), relevant[None])[0]
           for perm in itertools.permutations(range(k))]
    assert random_average_precision(m, k) == pytest.approx(np.mean(aps))


def test_mean_average_precision_reports_rows_and_chance():
    scores = np.array([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    relevant = np.array([[True, False, False], [True, False, False], [False, False, False]])
    out = mean_average_precision(scores, relevant)
    assert out["n"] == 2
    assert out["mAP"] == pytest.approx(100 * (1 + 1 / 3) / 2, abs=0.01)
    assert out["chance"] == pytest.approx(100 * random_average_precision(1, 3), abs=0.01)
