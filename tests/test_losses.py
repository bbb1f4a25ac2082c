"""Symmetric InfoNCE and CLIP's clamped logit scale."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from calm.model.losses import MAX_LOGIT_SCALE, clamp_logit_scale_, symmetric_info_nce


def _cross_entropy(rows: list[list[float]], scale: float, targets: list[int]) -> float:
    total = 0.0
    for row, target in zip(rows, targets):
        logits = [scale * x for x in row]
        m = max(logits)
        total += m + math.log(sum(math.exp(x - m) for x in logits)) - logits[target]
    return total / len(rows)


def _manual(sims: torch.Tensor, scale: float, targets: list[int]) -> float:
    """Plain-Python mean of the text->video and video->text cross-entropies."""
    rows = sims.tolist()
    n = len(rows)
    columns = [[rows[i][j] for i in range(n)] for j in range(n)]
    inverse = [0] * n  # video j is paired with text inverse[j]
    for i, t in enumerate(targets):
        inverse[t] = i
    return 0.5 * (_cross_entropy(rows, scale, targets) + _cross_entropy(columns, scale, inverse))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 8), log_scale=st.floats(-2.0, math.log(100.0)), seed=st.integers(0, 10**4))
def test_matches_manual_computation(n, log_scale, seed):
    g = torch.Generator().manual_seed(seed)
    sims = torch.rand(n, n, generator=g, dtype=torch.float64) * 2 - 1
    loss = symmetric_info_nce(sims, torch.tensor(log_scale, dtype=torch.float64))
    expected = _manual(sims, math.exp(log_scale), list(range(n)))
    assert float(loss) == pytest.approx(expected, rel=1e-9, abs=1e-9)


@settings(max_examples=20, deadline=None)
@given(perm=st.permutations(range(6)), seed=st.integers(0, 10**4))
def test_targets_are_the_paired_columns(perm, seed):
    g = torch.Generator().manual_seed(seed)
    sims = torch.rand(6, 6, generator=g, dtype=torch.float64) * 2 - 1
    log_scale = torch.tensor(math.log(20.0), dtype=torch.float64)
    targets = torch.tensor(perm)
    loss = symmetric_info_nce(sims, log_scale, targets)
    assert float(loss) == pytest.approx(_manual(sims, 20.0, list(perm)), rel=1e-9)
    # equivalently: reorder the columns so the pairs sit on the diagonal
    reordered = sims[:, targets]
    torch.testing.assert_close(symmetric_info_nce(reordered, log_scale), loss)


def test_perfect_separation_gives_small_loss():
    sims = torch.eye(4) * 2 - 1
    assert symmetric_info_nce(sims, torch.tensor(math.log(100.0))) < 1e-6
    uniform = symmetric_info_nce(torch.zeros(4, 4), torch.tensor(0.0))
    assert float(uniform) == pytest.approx(math.log(4))


@pytest.mark.parametrize("excess", [1e-3, 0.5, 3.0])
def test_scale_clamped_at_100(excess):
    g = torch.Generator().manual_seed(0)
    sims = torch.rand(5, 5, generator=g) * 2 - 1
    at_max = symmetric_info_nce(sims, torch.tensor(math.log(100.0)))
    log_scale = torch.tensor(math.log(100.0) + excess, requires_grad=True)
    above = symmetric_info_nce(sims, log_scale)
    torch.testing.assert_close(above, at_max)
    (grad,) = torch.autograd.grad(above, log_scale)
    assert grad == 0  # beyond the clamp the scale gets no gradient
    below = symmetric_info_nce(sims, torch.tensor(math.log(50.0)))
    assert not torch.allclose(below, at_max)
    assert MAX_LOGIT_SCALE == 100.0


def test_gradient_flows_to_scale_and_sims():
    sims = (torch.rand(4, 4) * 2 - 1).requires_grad_(True)
    log_scale = torch.tensor(math.log(10.0), requires_grad=True)
    g_sims, g_scale = torch.autograd.grad(symmetric_info_nce(sims, log_scale), [sims, log_scale])
    assert g_sims.abs().sum() > 0 and g_scale != 0
    assert torch.all(torch.diagonal(g_sims) <= 0)  # matched pairs are pulled together


@pytest.mark.parametrize("value, expected", [
    (5.0, math.log(100.0)), (math.log(100.0), math.log(100.0)), (2.0, 2.0), (-1.0, 0.0), (0.0, 0.0),
])
def test_clamp_logit_scale_in_place(value, expected):
    param = torch.nn.Parameter(torch.tensor(value))
    before = param.data_ptr()
    clamp_logit_scale_(param)
    assert float(param.detach()) == pytest.approx(expected)
    assert param.data_ptr() == before and param.requires_grad
    assert param.grad is None  # a no-grad update, not part of any graph


@pytest.mark.parametrize("shape", [(3, 4), (5, 2), (1, 2)])
def test_non_square_raises(shape):
    with pytest.raises(ValueError, match="square"):
        symmetric_info_nce(torch.zeros(shape), torch.tensor(0.0))


@pytest.mark.parametrize("targets", [[0, 0, 1], [0, 1, 3], [1, 2]])
def test_targets_must_be_a_permutation(targets):
    with pytest.raises(ValueError, match="permutation"):
        symmetric_info_nce(torch.zeros(3, 3), torch.tensor(0.0), torch.tensor(targets))
