"""Search building blocks: the matching moment, xpool frame weights, shortlist backends."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from calm.config.schema import FusionConfig
from calm.model.fusion import build_fusion
from calm.search.moment import best_frame_weights, moment, segment_bounds
from calm.search.shortlist import Shortlist

TIMES = np.array([0.5, 1.5, 2.5, 3.5])


def test_a_peaked_weight_gives_that_frames_segment():
    assert moment(np.array([0.05, 0.05, 0.85, 0.05]), TIMES, 4.0)[:2] == (2.0, 3.0)
    assert moment(np.array([0.9, 0.04, 0.03, 0.03]), TIMES, 4.0)[:2] == (0.0, 1.0)


def test_neighbours_above_half_the_peak_widen_the_span():
    assert moment(np.array([0.05, 0.35, 0.45, 0.15]), TIMES, 4.0)[:2] == (1.0, 3.0)
    # a strong frame that is not contiguous with the peak does not join the span
    assert moment(np.array([0.3, 0.05, 0.4, 0.25]), TIMES, 4.0)[:2] == (2.0, 4.0)


def test_padded_frames_are_ignored():
    times = np.array([0.2, 0.6, np.nan, np.nan])
    start, end, peak = moment(np.array([0.1, 0.9, 0.0, 0.0]), times, 0.8)
    assert (start, end, peak) == (0.4, 0.8, 1)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=16), st.floats(0.1, 100.0))
def test_the_moment_lies_in_the_clip_and_holds_the_peak(weights, duration):
    n = len(weights)
    times = (np.arange(n) + 0.5) * duration / n
    start, end, peak = moment(np.array(weights), times, duration)
    assert 0.0 <= start <= times[peak] <= end <= duration + 1e-9
    starts, ends = segment_bounds(times, duration)
    assert np.all(starts[1:] == ends[:-1]) and starts[0] == 0.0


def test_best_frame_weights_pick_the_closest_frame():
    frames = np.eye(4, 8, dtype=np.float32)[None]  # four orthogonal frames
    mask = np.array([[True, True, True, False]])
    w = best_frame_weights(frames[0, 2] * 3.0, frames, mask)
    assert w.tolist() == [[0.0, 0.0, 1.0, 0.0]]
    w = best_frame_weights(frames[0, 3], frames, mask)  # the closest frame is padding: ignored
    assert w[0, 3] == 0.0 and w.sum() == 1.0


def test_xpool_frame_weights_are_the_attention_that_pools():
    torch.manual_seed(0)
    head = build_fusion(FusionConfig(name="xpool", dropout=0.0), 32).eval()
    frames = torch.randn(3, 5, 32) * 4
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1, 3:] = False
    text = torch.randn(2, 32)
    with torch.no_grad():
        state = head.video_state(frames, mask)
        w = head.frame_weights(text, state)  # [texts, videos, frames]
        assert w.shape == (2, 3, 5)
        assert torch.allclose(w.sum(-1), torch.ones(2, 3), atol=1e-6)
        assert float(w[:, 1, 3:].abs().max()) == 0.0
        # pooling with these weights reproduces the head's own pooled embedding
        pooled = torch.einsum("tvf,vfo->vto", w, state["values"][:, :, 0]) + head.out_proj.bias
        x = head.norm_mid(pooled)
        assert torch.allclose(head.norm_out(x + head.linear(x)), head.pool_state(text, state),
                              atol=1e-5)
        # a text equal to one frame's feature attends to that frame most
        target = head.frame_weights(frames[2, 4][None] * 10, state)[0, 2]
        assert int(target.argmax()) == 4


def test_with_several_heads_each_head_counts_by_its_share_of_the_pooled_embedding():
    torch.manual_seed(1)
    head = build_fusion(FusionConfig(name="xpool", dropout=0.0, heads=2), 32).eval()
    with torch.no_grad():
        for proj in (head.q_proj, head.k_proj, head.v_proj, head.out_proj):
            proj.weight.add_(0.3 * torch.randn_like(proj.weight))
        frames = torch.randn(3, 6, 32) * 3
        mask = torch.ones(3, 6, dtype=torch.bool)
        text = torch.randn(2, 32)
        state = head.video_state(frames, mask)
        attn = head._attention(text, state)  # [Nv, Nt, H, T]
        w = head.frame_weights(text, state)
        assert torch.allclose(w.sum(-1), torch.ones(2, 3), atol=1e-6)
        # the two heads attend differently, so the mean over heads is not the pooling weight
        assert (attn[:, :, 0] - attn[:, :, 1]).abs().max() > 0.05
        # a head whose values are zero adds nothing to the embedding: the other head's attention
        # is then exactly the weight every frame is pooled with
        silent = dict(state, values=state["values"].clone())
        silent["values"][:, :, 1] = 0.0
        got = head.frame_weights(text, silent)
        assert torch.allclose(got, attn[:, :, 0].permute(1, 0, 2), atol=1e-6)
        assert not torch.allclose(got, attn.mean(2).permute(1, 0, 2), atol=1e-3)
        # weights of the head pooled alone reproduce the pooled embedding when it is one head's
        pooled = torch.einsum("tvf,vfo->vto", got, silent["values"][:, :, 0]) + head.out_proj.bias
        x = head.norm_mid(pooled)
        assert torch.allclose(head.norm_out(x + head.linear(x)), head.pool_state(text, silent),
                              atol=1e-5)


@pytest.mark.parametrize("backend", ["numpy", "faiss"])
def test_shortlist_backends_agree(backend):
    if backend == "faiss":
        pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((500, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    reference, other = Shortlist(vectors, "torch"), Shortlist(vectors, backend)
    for _ in range(5):
        q = rng.standard_normal(16).astype(np.float32)
        exact = set(np.argsort(-(vectors @ q))[:20].tolist())
        # fp16 vectors may swap near-ties at the border; the rest must agree
        assert len(set(reference.top(q, 20).tolist()) & exact) >= 19
        assert len(set(other.top(q, 20).tolist()) & exact) >= 19
    assert sorted(other.top(q, 1000).tolist()) == list(range(500))


def test_an_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="shortlist backend"):
        Shortlist(np.zeros((3, 4), np.float32), "annoy")


def test_moment_of_an_empty_mask_is_the_whole_clip():
    assert moment(np.zeros(3), np.array([math.nan] * 3), 2.0)[:2] == (0.0, 2.0)


@settings(max_examples=25, deadline=None)
@given(st.sampled_from([np.float32, np.float16, np.int64, np.bool_]),
       st.lists(st.integers(0, 7), min_size=0, max_size=4),
       st.sampled_from([(), (3,), (2, 5)]))
def test_row_writer_writes_the_npy_file_in_place(tmp_path_factory, dtype, counts, row_shape):
    """The index arrays are written once, behind a header rewritten with the real row count: the
    folder never holds a second copy (a million videos' state is tens of GB)."""
    from calm.search.store import RowWriter

    folder = tmp_path_factory.mktemp("rows")
    writer = RowWriter(folder / "a.npy", dtype, row_shape)
    rng = np.random.default_rng(len(counts))
    blocks = [rng.random((n, *row_shape)) * 10 for n in counts]
    for block in blocks:
        writer.append(block)
        assert [p.name for p in folder.iterdir()] == ["a.npy"]
    writer.finish()
    loaded = np.load(folder / "a.npy", mmap_mode="r") if sum(counts) else np.load(folder / "a.npy")
    expected = (np.concatenate(blocks).astype(dtype) if blocks
                else np.zeros((0, *row_shape), dtype))
    assert loaded.dtype == np.dtype(dtype) and loaded.shape == (sum(counts), *row_shape)
    assert np.array_equal(loaded, expected)
