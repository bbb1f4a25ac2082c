"""COCO caption metrics on hand-checked cases. Each `caption_metrics` call starts the Java PTB
tokenizer (and METEOR once per process), so the cases are few and each checks several things."""

from __future__ import annotations

import math
import shutil

import pytest

from calm.metrics import METRIC_NAMES, JavaNotFoundError, caption_metrics, ptb_tokenize

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="no Java runtime")


def _f_lcs(lcs: int, cand: int, ref: int, beta: float = 1.2) -> float:
    p, r = lcs / cand, lcs / ref
    return (1 + beta**2) * p * r / (r + beta**2 * p)


@needs_java
def test_identical_captions_score_the_maximum():
    # Two videos with disjoint words: every n-gram has IDF log(2 / 1), the candidate's tf-idf
    # vectors equal the reference's, so each n-gram cosine is 1 and CIDEr-D = 10 (x100 = 1000).
    refs = {"v1": ["a man is cooking pasta"], "v2": ["two dogs run outside"]}
    preds = {"v1": "A man is cooking pasta.", "v2": "two dogs run outside"}
    m = caption_metrics(preds, refs)
    assert list(m) == list(METRIC_NAMES)
    for name in ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4"):
        assert m[name] == pytest.approx(100.0, abs=1e-5)  # pycocoevalcap's 1e-9 smoothing
    assert m["METEOR"] == pytest.approx(100.0)
    assert m["ROUGE-L"] == pytest.approx(100.0)
    assert m["CIDEr"] == pytest.approx(1000.0)


@needs_java
def test_brevity_penalty_and_single_video_cider():
    # All n-gram precisions are 1; BP = exp(1 - 7 / 4). LCS = 4 of 4 and 7 words.
    # CIDEr-D on a one-video corpus is 0: every n-gram occurs in every video's references (IDF 0).
    m = caption_metrics({"v": "a man is cooking"}, {"v": ["a man is cooking in the kitchen"]})
    for name in ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4"):
        assert m[name] == pytest.approx(100 * math.exp(1 - 7 / 4), abs=1e-4)
    assert m["ROUGE-L"] == pytest.approx(100 * _f_lcs(4, 4, 7))
    assert m["CIDEr"] == 0.0


@needs_java
def test_lcs_empty_prediction_and_pycocoevalcap_agreement():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    preds = {"v1": "A man slowly cooks pasta.", "v2": "", "v3": "a woman is singing a song"}
    refs = {
        "v1": ["a man cooks", "a woman sings"],
        "v2": ["a dog runs"],
        "v3": ["a woman sings a song", "someone is singing on stage"],
    }
    m = caption_metrics(preds, refs)
    # v1: best precision 3/5 and best recall 3/3 (LCS "a man cooks"); v2 empty: 0.
    # v3: LCS 4 with "a woman sings a song" -> ("a woman a song"), P 4/6, R 4/5; with the other
    # reference "is singing" -> P 2/6, R 2/5: precision and recall maxima both come from the first.
    rouge = [_f_lcs(3, 5, 3), 0.0, _f_lcs(4, 6, 5)]
    assert m["ROUGE-L"] == pytest.approx(100 * sum(rouge) / 3)
    # Already PTB-clean text fed straight to pycocoevalcap gives the same corpus scores.
    gts = {i: refs[k] for i, k in enumerate(refs)}
    res = {0: ["a man slowly cooks pasta"], 1: [""], 2: [preds["v3"]]}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    for n in range(4):
        assert m[f"BLEU-{n + 1}"] == pytest.approx(100 * bleu[n])
    assert m["CIDEr"] == pytest.approx(100 * cider)
    assert 0.0 < m["METEOR"] < 100.0


@needs_java
def test_ptb_tokenize_matches_the_coco_conventions():
    out = ptb_tokenize(["A Man, (cooking) PASTA!", "", "two\nlines", "...", "Don't stop."])
    # -lowerCase turns brackets into -lrb-/-rrb-, which the COCO punctuation list (upper case)
    # does not remove: a quirk of the reference implementation, kept for comparability.
    assert out == ["a man -lrb- cooking -rrb- pasta", "", "two lines", "", "do n't stop"]


def test_input_validation():
    with pytest.raises(ValueError, match="same ids"):
        caption_metrics({"a": "x"}, {"b": ["x"]})
    with pytest.raises(ValueError, match="same ids"):
        caption_metrics({"a": "x"}, {"a": ["x"], "b": ["y"]})
    with pytest.raises(ValueError, match="no reference"):
        caption_metrics({"a": "x"}, {"a": []})
    with pytest.raises(ValueError, match="empty"):
        caption_metrics({"a": "x"}, {"a": ["ok", "  "]})
    with pytest.raises(TypeError):
        caption_metrics({"a": None}, {"a": ["x"]})
    with pytest.raises(TypeError):
        caption_metrics({"a": "x"}, {"a": "x"})
    with pytest.raises(ValueError, match="no predictions"):
        caption_metrics({}, {})


def test_missing_java_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    with pytest.raises(JavaNotFoundError, match="default-jre-headless"):
        caption_metrics({"a": "a cat"}, {"a": ["a cat"]})
    with pytest.raises(JavaNotFoundError, match="METEOR"):
        ptb_tokenize(["a cat"])
