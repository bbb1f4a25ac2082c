"""Model-agnostic greedy and beam search over a next-token scorer.

A scorer is `step_fn(prefix [N, t] long, index [N] long) -> log-probs [N, V]`: row n continues
`prefix[n]` for batch item `index[n]` (so a captioner can look up that video's cached memory).
Every live prefix has the same length at a step, so one call scores them all.

Beam search ranks candidates by raw cumulative log-probability and keeps the k best that do not
end; an end token among the k best candidates finishes a hypothesis, scored
log p / length ** length_penalty (length counts the generated tokens, the end token included, the
start token not). An item stops when it holds k finished hypotheses and no live beam can still
beat the worst of them: log-probabilities only fall, so a live beam's best possible score is its
log p over the longest length it could reach. (Stopping at the first k finished, as fairseq does,
returns fragments like "a dog runs" when weak beams let early end tokens into the top k.) With no
length penalty, beam size 1 is exactly greedy decoding; with one, it can only score higher.
Hypotheses that reach `max_length` tokens (start token included) without an end token are
returned unfinished.
Ties are broken towards the lower token id, as `argmax` does, in both searches.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

StepFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Hypothesis:
    tokens: tuple[int, ...]  # start token first; end token last when finished
    log_prob: float  # sum of the generated tokens' log-probabilities
    score: float  # log_prob / length ** length_penalty; hypotheses are sorted by it
    finished: bool  # ended with the end token (False: cut at max_length)
    text: str = ""  # filled in by a model that knows its tokenizer

    @property
    def length(self) -> int:
        return len(self.tokens) - 1


def length_normalised(log_prob: float, length: int, length_penalty: float) -> float:
    return log_prob / (max(length, 1) ** length_penalty) if length_penalty else log_prob


def _check(batch_size: int, max_length: int, size: int | None = None) -> None:
    if batch_size < 0:
        raise ValueError(f"batch_size must be >= 0, got {batch_size}")
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2 (start token + one token), got {max_length}")
    if size is not None and size < 1:
        raise ValueError(f"beam_size must be >= 1, got {size}")


def _ranked(log_probs: torch.Tensor, n: int) -> tuple[list[list[float]], list[list[int]]]:
    """The n best tokens per row, best first; a stable sort so ties go to the lower id (argmax)."""
    values, ids = torch.sort(log_probs.float(), dim=-1, descending=True, stable=True)
    n = min(n, log_probs.shape[-1])
    return values[:, :n].tolist(), ids[:, :n].tolist()


def _scores(step_fn: StepFn, prefixes: list[list[int]], index: list[int], device) -> torch.Tensor:
    prefix = torch.tensor(prefixes, dtype=torch.long, device=device)
    rows = torch.tensor(index, dtype=torch.long, device=device)
    out = step_fn(prefix, rows)
    if out.dim() != 2 or out.shape[0] != len(prefixes):
        raise ValueError(f"step_fn must return [N, V] log-probs, got {tuple(out.shape)}")
    return out.detach()


def greedy_search(
    step_fn: StepFn, batch_size: int, *, bos: int, eos: int, max_length: int,
    length_penalty: float = 0.0, device: torch.device | str | None = None,
) -> list[list[Hypothesis]]:
    """The most likely next token at every step; one hypothesis per item (a list, like beams)."""
    _check(batch_size, max_length)
    tokens = [[bos] for _ in range(batch_size)]
    log_prob = [0.0] * batch_size
    live = list(range(batch_size))
    while live and len(tokens[live[0]]) < max_length:
        values, ids = _ranked(_scores(step_fn, [tokens[b] for b in live], live, device), 1)
        still = []
        for b, (value,), (token,) in zip(live, values, ids):
            tokens[b].append(token)
            log_prob[b] += value
            if token != eos:
                still.append(b)
        live = still
    return [
        [Hypothesis(tuple(t), lp, length_normalised(lp, len(t) - 1, length_penalty),
                    t[-1] == eos and len(t) > 1)]
        for t, lp in zip(tokens, log_prob)
    ]


def beam_search(
    step_fn: StepFn, batch_size: int, *, bos: int, eos: int, beam_size: int, max_length: int,
    length_penalty: float = 0.0, device: torch.device | str | None = None,
) -> list[list[Hypothesis]]:
    """Up to `beam_size` hypotheses per item, sorted by score (best first)."""
    _check(batch_size, max_length, beam_size)
    k = beam_size
    live: list[list[tuple[list[int], float]]] = [[([bos], 0.0)] for _ in range(batch_size)]
    done: list[list[Hypothesis]] = [[] for _ in range(batch_size)]

    def finish(b: int, tokens: list[int], lp: float, finished: bool) -> None:
        score = length_normalised(lp, len(tokens) - 1, length_penalty)
        done[b].append(Hypothesis(tuple(tokens), lp, score, finished))

    for _ in range(1, max_length):
        rows = [(b, beam) for b in range(batch_size) for beam in live[b]]
        if not rows:
            break
        # k + 1 tokens per beam always hold k non-end candidates, enough to refill the beam.
        values, ids = _ranked(
            _scores(step_fn, [beam[0] for _, beam in rows], [b for b, _ in rows], device), k + 1
        )
        candidates: list[list[tuple[float, list[int], int]]] = [[] for _ in range(batch_size)]
        for (b, (prefix, lp)), row_values, row_ids in zip(rows, values, ids):
            for value, token in zip(row_values, row_ids):
                if value != -math.inf:
                    candidates[b].append((lp + value, prefix, token))
        for b in range(batch_size):
            if not live[b]:
                continue
            # Python's sort is stable: equal scores keep beam order, then token rank.
            ranked = sorted(candidates[b], key=lambda c: -c[0])
            new_live: list[tuple[list[int], float]] = []
            for rank, (total, prefix, token) in enumerate(ranked):
                if token == eos:
                    if rank < k:
                        finish(b, [*prefix, token], total, True)
                else:
                    new_live.append(([*prefix, token], total))
                    if len(new_live) == k:
                        break
            done[b] = sorted(done[b], key=lambda h: -h.score)[:k]
            live[b] = new_live
            if len(done[b]) == k and new_live:
                # The longest reachable length is max_length - 1 generated tokens.
                best = max(length_normalised(lp, max_length - 1, length_penalty)
                           for _, lp in new_live)
                if best <= done[b][-1].score:
                    live[b] = []
    for b in range(batch_size):
        for prefix, lp in live[b]:
            finish(b, prefix, lp, False)
    return [sorted(hyps, key=lambda h: -h.score)[:k] for hyps in done]


def search(
    step_fn: StepFn, batch_size: int, *, bos: int, eos: int, beam_size: int, max_length: int,
    length_penalty: float = 0.0, device: torch.device | str | None = None,
) -> list[list[Hypothesis]]:
    """Greedy for beam size 1 (cheaper, same result), beam search otherwise."""
    if beam_size == 1:
        return greedy_search(step_fn, batch_size, bos=bos, eos=eos, max_length=max_length,
                             length_penalty=length_penalty, device=device)
    return beam_search(step_fn, batch_size, bos=bos, eos=eos, beam_size=beam_size,
                       max_length=max_length, length_penalty=length_penalty, device=device)
