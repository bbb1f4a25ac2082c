"""Greedy and beam search on hand-built and random next-token scorers."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from calm.model.decoding import beam_search, greedy_search, search

EOS, A, B, BOS = 0, 1, 2, 3
V = 4


def table_step(table: dict[tuple[int, ...], dict[int, float]]):
    """A scorer from a prefix -> {token: probability} table (missing tokens get ~0, missing
    prefixes a uniform distribution)."""

    def step(prefix: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        rows = []
        for p in prefix.tolist():
            probs = torch.full((V,), 1e-9)
            for token, prob in table.get(tuple(p), dict.fromkeys(range(V), 1 / V)).items():
                probs[token] = prob
            rows.append(probs.log())
        return torch.stack(rows)

    return step


def random_step(seed: int, vocab: int, forbid: int | None = None):
    """Deterministic random log-probs per (item, prefix): a fixed but arbitrary model."""

    def step(prefix: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        rows = []
        for i, p in zip(index.tolist(), prefix.tolist()):
            g = torch.Generator().manual_seed(hash((seed, i, *p)) % (2**31))
            logits = 2.0 * torch.randn(vocab, generator=g)
            if forbid is not None:
                logits[forbid] = -math.inf
            rows.append(logits.log_softmax(-1))
        return torch.stack(rows)

    return step


def test_beam_beats_greedy_on_a_garden_path():
    # Greedy takes "a" (0.6) and ends at 0.6 * 0.4 = 0.24; "b" then end gives 0.4 * 0.9 = 0.36.
    step = table_step({
        (BOS,): {A: 0.6, B: 0.4},
        (BOS, A): {EOS: 0.4, A: 0.3, B: 0.3},
        (BOS, B): {EOS: 0.9, A: 0.05, B: 0.05},
    })
    greedy = greedy_search(step, 1, bos=BOS, eos=EOS, max_length=3)[0]
    assert greedy[0].tokens == (BOS, A, EOS)
    assert greedy[0].log_prob == pytest.approx(math.log(0.24), abs=1e-6)
    beams = beam_search(step, 1, bos=BOS, eos=EOS, beam_size=2, max_length=3)[0]
    assert [h.tokens for h in beams] == [(BOS, B, EOS), (BOS, A, EOS)]
    assert beams[0].score == pytest.approx(math.log(0.36), abs=1e-6)
    assert all(h.finished for h in beams)


def test_length_penalty_favours_the_longer_caption():
    # Ending at once: log 0.55 = -0.598 (length 1); "a" then end: log(0.44 * 0.9) = -0.926
    # (length 2, -0.463 per token). Raw log-prob prefers the short one, a penalty of 1 the long one.
    step = table_step({
        (BOS,): {EOS: 0.55, A: 0.44, B: 0.01},
        (BOS, A): {EOS: 0.9, A: 0.05, B: 0.05},
        (BOS, B): {EOS: 0.9, A: 0.05, B: 0.05},
    })
    plain = beam_search(step, 1, bos=BOS, eos=EOS, beam_size=2, max_length=3)[0]
    assert plain[0].tokens == (BOS, EOS)
    normed = beam_search(step, 1, bos=BOS, eos=EOS, beam_size=2, max_length=3,
                         length_penalty=1.0)[0]
    assert normed[0].tokens == (BOS, A, EOS)
    assert normed[0].score == pytest.approx(math.log(0.44 * 0.9) / 2, abs=1e-6)
    assert normed[1].score == pytest.approx(math.log(0.55), abs=1e-6)


def test_max_length_cuts_unfinished_hypotheses():
    # The end token is never among the best candidates, so nothing finishes before max_length.
    words = {A: 0.7, B: 0.3}
    step = table_step({(BOS,): words, (BOS, A): words, (BOS, B): {A: 0.5, B: 0.5}})
    greedy = greedy_search(step, 1, bos=BOS, eos=EOS, max_length=3)[0][0]
    assert greedy.tokens == (BOS, A, A) and not greedy.finished
    beams = beam_search(step, 1, bos=BOS, eos=EOS, beam_size=2, max_length=3)[0]
    assert [h.tokens for h in beams] == [(BOS, A, A), (BOS, A, B)]
    assert not any(h.finished for h in beams)
    assert beams[1].log_prob == pytest.approx(math.log(0.7 * 0.3), abs=1e-6)


def test_early_end_tokens_do_not_stop_the_search():
    # Weak second beams let "a <end>" and "a b <end>" into the top 2 early; stopping at the first
    # two finished hypotheses (fairseq's rule) would return the fragment "a". The search goes on
    # while the live "a b b" can still beat them and finds "a b b <end>" (0.97 * .7 * .7 * .99).
    step = table_step({
        (BOS,): {A: 0.97, B: 0.02, EOS: 0.01},
        (BOS, A): {B: 0.7, EOS: 0.3},
        (BOS, A, B): {B: 0.7, EOS: 0.3},
        (BOS, A, B, B): {EOS: 0.99, A: 0.01},
    })
    beams = beam_search(step, 1, bos=BOS, eos=EOS, beam_size=2, max_length=6)[0]
    assert beams[0].tokens == (BOS, A, B, B, EOS)
    assert beams[0].log_prob == pytest.approx(math.log(0.97 * 0.7 * 0.7 * 0.99), abs=1e-6)
    assert beams[1].tokens == (BOS, A, EOS)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), batch=st.integers(1, 3), max_length=st.integers(2, 6))
def test_beam_size_one_is_greedy(seed, batch, max_length):
    step = random_step(seed, vocab=5)
    greedy = greedy_search(step, batch, bos=4, eos=0, max_length=max_length)
    beams = beam_search(step, batch, bos=4, eos=0, beam_size=1, max_length=max_length)
    assert greedy == beams
    assert search(step, batch, bos=4, eos=0, beam_size=1, max_length=max_length) == greedy


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), max_length=st.integers(2, 6))
def test_beam_size_one_with_length_penalty_never_scores_below_greedy(seed, max_length):
    # It follows greedy's tokens; where greedy ends it keeps looking for a longer, better-scored one.
    step = random_step(seed, vocab=5)
    greedy = greedy_search(step, 2, bos=4, eos=0, max_length=max_length, length_penalty=1.0)
    beams = beam_search(step, 2, bos=4, eos=0, beam_size=1, max_length=max_length,
                        length_penalty=1.0)
    for g, b in zip(greedy, beams):
        assert b[0].score >= g[0].score - 1e-9
        n = len(g[0].tokens) - 1
        assert b[0].tokens[:n] == g[0].tokens[:n]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), batch=st.integers(1, 3), k=st.integers(2, 5),
       penalty=st.sampled_from([0.0, 1.0]))
def test_beams_are_sorted_distinct_and_consistent(seed, batch, k, penalty):
    step = random_step(seed, vocab=6)
    out = beam_search(step, batch, bos=5, eos=0, beam_size=k, max_length=5, length_penalty=penalty)
    assert len(out) == batch
    for b, hyps in enumerate(out):
        assert 1 <= len(hyps) <= k
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)
        assert len({h.tokens for h in hyps}) == len(hyps)
        for h in hyps:
            assert h.tokens[0] == 5 and 0 not in h.tokens[1:-1]
            assert h.finished == (h.tokens[-1] == 0)
            # The reported log-prob is the scorer's own, re-summed along the hypothesis.
            lp = sum(step(torch.tensor([h.tokens[:t]]), torch.tensor([b]))[0, h.tokens[t]].item()
                     for t in range(1, len(h.tokens)))
            assert h.log_prob == pytest.approx(lp, abs=1e-5)
            assert h.score == pytest.approx(lp / (h.length ** penalty), abs=1e-5)


def _all_sequences(vocab: int, eos: int, bos: int, max_length: int):
    words = [t for t in range(vocab) if t not in (eos, bos)]
    for n in range(0, max_length - 1):
        for body in itertools.product(words, repeat=n):
            yield (bos, *body, eos)
    for body in itertools.product(words, repeat=max_length - 1):
        yield (bos, *body)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_a_wide_enough_beam_is_exhaustive(seed):
    # bos 3, eos 0, two words: 1 + 2 + 4 finished and 8 cut sequences = 15 <= beam 16.
    step = random_step(seed, vocab=4, forbid=3)
    beams = beam_search(step, 1, bos=3, eos=0, beam_size=16, max_length=4)[0]

    def logp(seq):
        return sum(step(torch.tensor([seq[:t]]), torch.tensor([0]))[0, seq[t]].item()
                   for t in range(1, len(seq)))

    exhaustive = sorted(_all_sequences(4, 0, 3, 4), key=lambda s: -logp(s))
    assert len(beams) == len(exhaustive) == 15
    assert [h.tokens for h in beams] == exhaustive


def test_rejects_bad_arguments():
    step = random_step(0, 4)
    with pytest.raises(ValueError, match="max_length"):
        greedy_search(step, 1, bos=3, eos=0, max_length=1)
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(step, 1, bos=3, eos=0, beam_size=0, max_length=4)
    assert beam_search(step, 0, bos=3, eos=0, beam_size=2, max_length=4) == []
