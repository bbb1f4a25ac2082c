"""The Python API: calm.api.load, encode_texts / encode_videos, score, anchors_of, uncertainty."""

from __future__ import annotations

import pytest
import torch

from calm.api import CapabilityError, EncodedVideos, load
from calm.data.video import sample_indices
from calm.model.scoring import similarity_matrix
from tests.search_fixtures import FPS, NUM_FRAMES, tiny_checkpoint, write_library


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    return write_library(tmp_path_factory.mktemp("library"), clips=4)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load(tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "m.safetensors"))


@pytest.fixture(scope="module")
def encoded(model, library) -> EncodedVideos:
    return model.encode_videos(sorted(library.rglob("*.mp4")), workers=0)


def test_encode_videos_lists_the_broken_file_and_encodes_the_rest(encoded, library):
    assert len(encoded) == 4
    assert [p for p, _ in encoded.failed] == [str(library / "broken.mp4")]
    assert "PyAV cannot open it" in encoded.failed[0][1]
    n, t, d = encoded.frames.shape
    assert (n, t) == (4, NUM_FRAMES)
    assert set(encoded.state) == {"keys", "values", "mask"}
    assert torch.allclose(encoded.mean.norm(dim=-1), torch.ones(4), atol=1e-5)


def test_frame_times_are_the_sampled_frames_timestamps(encoded):
    expected = [i / FPS for i in sample_indices(30, NUM_FRAMES, "test")]
    assert encoded.times[0].tolist() == pytest.approx(expected, abs=1e-3)
    assert encoded.durations.tolist() == pytest.approx([3.0] * 4, abs=1e-3)


def test_score_matches_evaluation_and_depends_only_on_the_pair(model, encoded):
    texts = ["a red block", "grey noise", "something moving left"]
    scores = model.score(texts, encoded)
    assert scores.shape == (3, 4)
    text = model.encode_texts(texts)
    expected = similarity_matrix(model.model, text, encoded.frames, encoded.mask,
                                 model.cfg.model.score)
    assert torch.allclose(scores, expected, atol=1e-6)
    sub = EncodedVideos.concat([_rows(encoded, [2, 0])])
    assert torch.allclose(model.score(texts[1:], sub), scores[1:, [2, 0]], atol=1e-5)


def test_score_accepts_paths(model, encoded, library):
    paths = encoded.paths[:2]
    assert torch.allclose(model.score(["a block"], paths), model.score(["a block"], encoded)[:, :2],
                          atol=1e-5)


def test_anchors_of_gives_top_labels_with_probabilities(model, encoded):
    tops = model.anchors_of(encoded, k=3)
    assert len(tops) == 4
    labels = model.anchor_labels
    for top in tops:
        assert len(top) == 3
        probs = [p for _, p in top]
        assert probs == sorted(probs, reverse=True)
        assert all(label in labels for label, _ in top) and 0 < sum(probs) <= 1 + 1e-6
    full = model.anchor_probs(encoded)
    assert full.shape == (4, len(labels))
    assert tops[0][0][1] == pytest.approx(float(full[0].max()))


def test_sigma_is_the_mean_posterior_sigma_of_each_video(model, encoded):
    sigma = model.uncertainty(encoded, signal="sigma")
    assert sigma.shape == (4,)
    # by hand: V_p -> the VAE encoder's output, whose second half is log sigma^2 per latent dim
    vae = model.model.vae
    with torch.no_grad():
        log_var = vae.encoder(model.anchor_probs(encoded))[:, vae.latent_dim:]
    expected = torch.sqrt(torch.exp(log_var)).sum(dim=1) / vae.latent_dim
    torch.testing.assert_close(sigma, expected, atol=1e-6, rtol=1e-5)
    assert len(set(sigma.tolist())) == 4  # each video its own value, not one for the batch
    # a video's sigma depends on that video alone, whatever else is asked with it
    torch.testing.assert_close(model.uncertainty(_rows(encoded, [3, 1]), signal="sigma"),
                               sigma[[3, 1]])


def test_uncertainty_is_the_chosen_signal_per_video(model, encoded):
    # the default, chosen on the dev split: 1 - the top-1 softmax probability of each video
    # among the texts it is matched against, at the model's logit scale (by hand)
    texts = ["a red ball", "a blue box moves left", "two shapes", "night"]
    assert model.uncertainty_signal == "top1_prob"
    value = model.uncertainty(encoded, texts=texts)
    scale = float(model.model.logit_scale.exp().clamp(max=100))
    by_hand = 1 - torch.softmax(scale * model.score(texts, encoded).t().double(), dim=1).max(1).values
    assert value.shape == (4,)
    torch.testing.assert_close(value, by_hand.float(), atol=1e-6, rtol=1e-5)
    # a video's value depends on the candidates, not on the other videos asked with it
    torch.testing.assert_close(model.uncertainty(_rows(encoded, [2, 0]), texts=texts),
                               value[[2, 0]], atol=1e-6, rtol=1e-5)
    scores = model.score(texts, encoded).t()
    top2 = scores.topk(2, dim=1).values
    torch.testing.assert_close(model.uncertainty(encoded, "margin", texts),
                               -(top2[:, 0] - top2[:, 1]), atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="pass texts="):
        model.uncertainty(encoded)
    with pytest.raises(ValueError, match="unknown uncertainty signal"):
        model.uncertainty(encoded, signal="confidence")
    # the VAE's own signals by name
    d = model.model.anchor_distributions(None, encoded.frames, encoded.mask)
    torch.testing.assert_close(model.uncertainty(encoded, signal="mutual_info"),
                               d.signals()["mutual_info"])
    sigma = model.uncertainty(encoded, signal="sigma")
    torch.testing.assert_close(sigma, d.sigma)
    assert bool((sigma > 0).all())


def test_frame_anchor_probs_say_which_frames_carry_which_anchor(model, encoded):
    frames = model.frame_anchor_probs(encoded)
    n, t = encoded.mask.shape
    assert frames.probs.shape == (n, t, len(model.anchor_labels))
    assert torch.equal(frames.mask, encoded.mask.bool())
    torch.testing.assert_close(frames.probs.sum(-1), encoded.mask.float())
    top = frames.top(0, k=2)
    assert len(top) == int(encoded.mask[0].sum()) and len(top[0][1]) == 2
    assert top[0][0] == pytest.approx(float(encoded.times[0, 0]))
    assert top[0][1][0][1] == pytest.approx(float(frames.probs[0, 0].max()))


def test_models_without_anchors_or_vae_say_so(tmp_path, encoded):
    baseline = load(tiny_checkpoint(tmp_path / "none.safetensors", alignment="none"))
    enc = baseline.encode_videos(encoded.paths[:1])
    with pytest.raises(CapabilityError, match="no class anchors"):
        baseline.anchors_of(enc)
    with pytest.raises(CapabilityError, match="no VAE"):
        baseline.uncertainty(enc, signal="sigma")
    # the default signal is the retrieval's own: a baseline has it too
    assert baseline.uncertainty(enc, texts=["a red ball", "night"]).shape == (1,)
    kl = load(tiny_checkpoint(tmp_path / "kl.safetensors", alignment="kl"))
    assert len(kl.anchors_of(kl.encode_videos(encoded.paths[:1]), k=2)[0]) == 2
    with pytest.raises(CapabilityError, match="no VAE"):
        kl.uncertainty(encoded.paths[:1], signal="mutual_info")


def test_bad_arguments_are_clear(model, library):
    with pytest.raises(TypeError, match="list of strings"):
        model.encode_texts("one text")
    with pytest.raises(TypeError, match="list of paths"):
        model.encode_videos(str(library / "part0" / "clip0.mp4"))
    with pytest.raises(ValueError, match="no video could be decoded"):
        model.encode_videos([library / "broken.mp4"])
    assert model.encode_texts([]).shape == (0, model.model.backbone.embed_dim)


def test_encode_videos_with_workers_gives_the_same_features(model, encoded):
    parallel = model.encode_videos(encoded.paths, workers=2, batch_size=3)
    assert parallel.paths == encoded.paths
    assert torch.allclose(parallel.frames, encoded.frames, atol=1e-5)


def _rows(enc: EncodedVideos, rows: list[int]) -> EncodedVideos:
    return EncodedVideos(
        paths=[enc.paths[i] for i in rows], frames=enc.frames[rows], mask=enc.mask[rows],
        state={k: v[rows] for k, v in enc.state.items()}, mean=enc.mean[rows],
        times=enc.times[rows], durations=enc.durations[rows],
    )
