"""Temporal fusion heads: shapes, frame masks, and scores that depend only on (text, video)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from calm.config import FusionConfig
from calm.model.fusion import (
    FUSION_HEADS,
    MeanPooling,
    SequenceTransformer,
    TextConditionedPooling,
    build_fusion,
    masked_mean,
)

DIM = 32
T = 5
HEADS = ("meanP", "seqTransf", "xpool")
CLASSES = {"meanP": MeanPooling, "seqTransf": SequenceTransformer, "xpool": TextConditionedPooling}
ATOL = 1e-5


def _perturb(head: torch.nn.Module) -> torch.nn.Module:
    """Moves every weight off its (identity / zero) init so no term is trivially inert."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in head.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return head.eval()


@pytest.fixture(scope="module")
def heads():
    torch.manual_seed(0)
    out = {}
    for name in HEADS:
        cfg = FusionConfig(name=name, layers=2, heads=2 if name == "xpool" else 1, max_frames=8)
        out[name] = _perturb(build_fusion(cfg, DIM))
    return out


def _data(n_t, n_v, seed=0, t=T):
    g = torch.Generator().manual_seed(seed)
    text = torch.randn(n_t, DIM, generator=g)
    frames = torch.randn(n_v, t, DIM, generator=g)
    lengths = torch.randint(1, t + 1, (n_v,), generator=g)
    lengths[0] = t  # at least one full clip
    mask = torch.arange(t)[None] < lengths[:, None]
    frames = frames * mask[..., None]  # padded frames are zero, as the backbone leaves them
    return text, frames, mask


def _sim(head, text, frames, mask):
    with torch.no_grad():
        return head.similarity(text, frames, mask)


# --------------------------------------------------------------------------------------------
# registry, shapes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", HEADS)
def test_registry_builds_by_name(name):
    head = build_fusion(FusionConfig(name=name), DIM)
    assert type(head) is CLASSES[name]
    assert head.text_conditioned == (name == "xpool")


def test_unknown_head_lists_choices():
    with pytest.raises(KeyError) as info:
        build_fusion(FusionConfig(name="meanpool"), DIM)
    message = str(info.value)
    assert "meanpool" in message
    for name in HEADS:
        assert name in message
    assert set(HEADS) <= set(FUSION_HEADS.names())


@pytest.mark.parametrize("name", HEADS)
def test_output_shapes(heads, name):
    head = heads[name]
    text, frames, mask = _data(4, 3)
    with torch.no_grad():
        if name == "xpool":
            assert head(frames, mask, text).shape == (3, 4, DIM)
            with pytest.raises(ValueError, match="text"):
                head(frames, mask)
        else:
            assert head(frames, mask).shape == (3, DIM)
            assert head(frames).shape == (3, DIM)
        sims = head.similarity(text, frames, mask)
    assert sims.shape == (4, 3)
    assert torch.isfinite(sims).all()
    assert sims.abs().max() <= 1 + 1e-5  # cosine similarities


def test_meanp_is_the_masked_mean(heads):
    text, frames, mask = _data(2, 3)
    pooled = heads["meanP"](frames, mask)
    for v in range(3):
        torch.testing.assert_close(pooled[v], frames[v, mask[v]].mean(0))
    assert torch.equal(masked_mean(frames, None), frames.mean(1))


def test_seqtransf_too_many_frames(heads):
    _, frames, mask = _data(1, 2, t=9)
    with pytest.raises(ValueError, match="frame positions"):
        heads["seqTransf"](frames, mask)


def test_xpool_heads_must_divide_dim():
    with pytest.raises(ValueError, match="divisible"):
        build_fusion(FusionConfig(name="xpool", heads=3), DIM)


def test_xpool_projections_start_at_identity():
    """Projections start at identity with zero bias, so before training the pooling is a
    text-weighted average of the (normalised) frames rather than a random mix."""
    head = build_fusion(FusionConfig(name="xpool"), DIM)
    for proj in (head.q_proj, head.k_proj, head.v_proj, head.out_proj, head.linear):
        assert torch.equal(proj.weight, torch.eye(DIM))
        assert torch.all(proj.bias == 0)


# --------------------------------------------------------------------------------------------
# frame masks
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", HEADS)
@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), fill=st.sampled_from(["random", "large", "zeros", "copy"]))
def test_padded_frames_do_not_matter(heads, name, seed, fill):
    head = heads[name]
    text, frames, mask = _data(3, 4, seed=seed)
    if mask.all():
        mask[1, -1] = False
    other = frames.clone()
    pad = ~mask
    if fill == "random":
        other[pad] = torch.randn_like(other[pad])
    elif fill == "large":
        other[pad] = 1e3 * torch.randn_like(other[pad])
    elif fill == "zeros":
        other[pad] = 0
    else:  # padded positions repeat a real frame (a common padding scheme)
        other[pad] = frames[0, 0]
    torch.testing.assert_close(_sim(head, text, frames, mask), _sim(head, text, other, mask),
                               atol=ATOL, rtol=0)
    with torch.no_grad():
        if name == "xpool":
            torch.testing.assert_close(head(frames, mask, text), head(other, mask, text),
                                       atol=ATOL, rtol=0)
        else:
            torch.testing.assert_close(head(frames, mask), head(other, mask), atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", HEADS)
def test_mask_equals_truncation(heads, name):
    """A clip with k real frames out of T scores like the same clip given only its k frames."""
    head = heads[name]
    text, frames, mask = _data(3, 1)
    mask[0, 3:] = False
    short = frames[:, :3]
    torch.testing.assert_close(_sim(head, text, frames, mask), _sim(head, text, short, None),
                               atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", HEADS)
def test_padded_frames_get_no_gradient(heads, name):
    head = heads[name]
    text, frames, mask = _data(3, 3)
    mask[1, 2:] = False
    frames = frames.clone().requires_grad_(True)
    head.similarity(text, frames, mask).sum().backward()
    assert torch.all(frames.grad[~mask] == 0)
    assert frames.grad[mask].abs().sum() > 0


# --------------------------------------------------------------------------------------------
# a pair's score depends on that pair only
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", HEADS)
@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_permuting_videos_permutes_columns(heads, name, data):
    head = heads[name]
    n_v = data.draw(st.integers(2, 6))
    perm = torch.tensor(data.draw(st.permutations(range(n_v))))
    text, frames, mask = _data(4, n_v, seed=data.draw(st.integers(0, 1000)))
    full = _sim(head, text, frames, mask)
    permuted = _sim(head, text, frames[perm], mask[perm])
    torch.testing.assert_close(permuted, full[:, perm], atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", HEADS)
def test_permuting_texts_permutes_rows(heads, name):
    head = heads[name]
    text, frames, mask = _data(5, 3)
    perm = torch.tensor([3, 0, 4, 2, 1])
    torch.testing.assert_close(_sim(head, text[perm], frames, mask),
                               _sim(head, text, frames, mask)[perm], atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", HEADS)
@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_subset_score_equals_submatrix(heads, name, data):
    head = heads[name]
    n_t, n_v = 5, 6
    text, frames, mask = _data(n_t, n_v, seed=data.draw(st.integers(0, 1000)))
    ti = data.draw(st.lists(st.integers(0, n_t - 1), min_size=1, max_size=n_t, unique=True))
    vi = data.draw(st.lists(st.integers(0, n_v - 1), min_size=1, max_size=n_v, unique=True))
    ti, vi = torch.tensor(ti), torch.tensor(vi)
    full = _sim(head, text, frames, mask)
    sub = _sim(head, text[ti], frames[vi], mask[vi])
    torch.testing.assert_close(sub, full[ti][:, vi], atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", HEADS)
@pytest.mark.parametrize("n_t, n_v", [(7, 2), (1, 5), (3, 1)])
def test_unequal_counts_pairwise(heads, name, n_t, n_v):
    head = heads[name]
    text, frames, mask = _data(n_t, n_v, seed=n_t * 10 + n_v)
    full = _sim(head, text, frames, mask)
    assert full.shape == (n_t, n_v)
    for i in range(n_t):
        for j in range(n_v):
            alone = _sim(head, text[i : i + 1], frames[j : j + 1], mask[j : j + 1])
            torch.testing.assert_close(full[i, j], alone[0, 0], atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", HEADS)
def test_video_state_and_score_split(heads, name):
    """Evaluation caches video_state once; scoring from it equals similarity()."""
    head = heads[name]
    text, frames, mask = _data(4, 3)
    with torch.no_grad():
        state = head.video_state(frames, mask)
        torch.testing.assert_close(head.score(text, state), head.similarity(text, frames, mask))


def test_xpool_pooling_depends_on_text(heads):
    head = heads["xpool"]
    text, frames, mask = _data(2, 1)
    with torch.no_grad():
        pooled = head(frames, mask, text)  # [1, 2, D]
    assert (pooled[0, 0] - pooled[0, 1]).abs().max() > 1e-4


@pytest.mark.parametrize("heads", [1, 4])
def test_xpool_folded_output_projection_equals_pooling_then_projecting(heads):
    """video_state moves out_proj onto the frames; it must equal project(sum_f a_f v_f)."""
    import math

    torch.manual_seed(0)
    head = TextConditionedPooling(64, FusionConfig(name="xpool", heads=heads, dropout=0.0))
    for p in head.parameters():
        torch.nn.init.normal_(p, std=0.2)
    text, frames = torch.randn(5, 64), torch.randn(3, 6, 64)
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[0, 4:] = False
    x = head.norm_in(frames)
    q = head._split(head.q_proj(head.norm_in(text)))
    k, v = head._split(head.k_proj(x)), head._split(head.v_proj(x))
    logits = torch.einsum("thd,vfhd->vthf", q, k) / math.sqrt(q.shape[-1])
    attn = logits.masked_fill(~mask[:, None, None, :], float("-inf")).softmax(-1)
    pooled = torch.einsum("vthf,vfhd->vthd", attn, v).flatten(-2)
    y = head.norm_mid(head.out_proj(pooled))
    reference = head.norm_out(y + head.linear(y))
    torch.testing.assert_close(head(frames, mask, text), reference, rtol=1e-5, atol=1e-5)
