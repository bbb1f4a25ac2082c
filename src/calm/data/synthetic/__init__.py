"""The embedded synthetic video-text benchmark: calm's default workload and demo data.

`generate(out_dir, scale, seed)` writes three domains of procedural clips with captions, each in a
real benchmark's file format (MSR-VTT, DiDeMo, LSMDC) so the ordinary loaders read them, plus the
toy world's anchor labels (`anchors.txt`) and an image-caption split for pretraining a small CLIP
(`pretrain/`). `manifest.json` says what is where. See docs/synthetic-benchmark.md for the design.

Every clip, caption and name is drawn from its own random stream, seeded by (seed, domain, split,
index), so the output does not depend on the order or the number of worker processes: the videos
and the pretraining pairs are rendered in parallel over clips (by default one process per
available core), and the files are the same bytes whatever the number of processes (tested).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np

from calm.data.synthetic.anchors import ANCHOR_LABELS, anchor_labels, write_anchors
from calm.data.synthetic.captions import clip_captions, didemo_paragraph
from calm.data.synthetic.config import (
    DOMAINS,
    SCALES,
    Difficulty,
    DomainStyle,
    Scale,
)
from calm.data.synthetic.pretrain_pairs import DOMAIN_ORDER, HELD_OUT, pretrain_pair
from calm.data.synthetic.render import clip_times, render_frames
from calm.data.synthetic.world import MOTIONS, ClipSpec, oracle_recall_at_1, pick, sample_clip
from calm.data.synthetic.writer import (
    encode_video,
    lsmdc_time,
    write_didemo,
    write_json,
    write_lsmdc,
    write_msrvtt,
)
from calm.machine import available_cores

__all__ = [
    "generate",
    "anchor_labels",
    "ANCHOR_LABELS",
    "DOMAINS",
    "SCALES",
    "Difficulty",
    "merge_mentions",
    "FORMAT_VERSION",
]

FORMAT_VERSION = 1
GENERATOR = "calm.data.synthetic"
SPLIT_INDEX = {"train": 0, "val": 1, "test": 2}
STREAM_WORLD, STREAM_TEXT, STREAM_PIXELS, STREAM_NAME = 0, 1, 2, 3
PRETRAIN_CHUNK = 256  # pretraining pairs per parallel task
OWNED = DOMAIN_ORDER + ("pretrain", "anchors.txt", "manifest.json")
MOVIE_TITLES = (
    "Shapes_In_The_Dark",
    "The_Red_Orb",
    "Night_Of_The_Star",
    "Desert_Crossing",
    "The_Last_Ring",
    "Summer_Meadow",
    "Falling_Cubes",
    "The_Spinning_Jewel",
    "Above_The_Clouds",
    "Halo_Effect",
    "The_Golden_Beam",
    "Midnight_Garden",
    "Dunes",
    "The_Silver_Cross",
    "Bouncing_Back",
)


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


def merge_mentions(mentions: list[dict]) -> dict:
    """What a paragraph names: the union of what its sentences name."""
    out: dict = {}
    for m in mentions:
        for k, v in m.items():
            if k == "second":
                if v is not None:
                    out["second"] = {**(out.get("second") or {}), **v}
            else:
                out[k] = v
    return out


def _didemo_name(rng: np.random.Generator, style: DomainStyle) -> str:
    """A Flickr-like file name such as 12345678@N05_3655084291_d8b58466fa.mov."""
    exts = [e for e, _ in style.containers]
    ext = pick(rng, exts, [w for _, w in style.containers])
    hexpart = "".join(pick(rng, "0123456789abcdef") for _ in range(10))
    return (
        f"{int(rng.integers(10**7, 10**8))}@N{int(rng.integers(0, 100)):02d}_"
        f"{int(rng.integers(10**9, 10**10))}_{hexpart}.{ext}"
    )


def _build_items(
    domain: str, split: str, count: int, start: int, scale: Scale, difficulty: Difficulty, seed: int
) -> list[dict]:
    """Clips, captions and names of one split of one domain (no pixels yet)."""
    style = DOMAINS[domain]
    d_idx, s_idx = DOMAIN_ORDER.index(domain), SPLIT_INDEX[split]
    n_frames, fps = scale.frames[domain]
    items = []
    per_movie = max(3, min(20, count // 6 or 1))
    for i in range(count):
        clip = sample_clip(_rng(seed, d_idx, s_idx, i, STREAM_WORLD), style, difficulty)
        trng = _rng(seed, d_idx, s_idx, i, STREAM_TEXT)
        nrng = _rng(seed, d_idx, s_idx, i, STREAM_NAME)
        item: dict = {
            "clip": clip,
            "split": split,
            "pixel_seed": [seed, d_idx, s_idx, i, STREAM_PIXELS],
        }
        if domain == "msrvtt":
            item["video_id"] = f"video{start + i}"
            item["file"] = f"{item['video_id']}.mp4"
            item["texts"] = clip_captions(trng, clip, difficulty, style, scale.msrvtt_captions)
            item["category"] = MOTIONS.index(clip.objects[0].motion)
            item["jsfusion"] = int(trng.integers(len(item["texts"])))
        elif domain == "didemo":
            n = int(trng.integers(scale.didemo_sentences[0], scale.didemo_sentences[1] + 1))
            item["texts"] = didemo_paragraph(trng, clip, difficulty, style, n)
            item["video_id"] = _didemo_name(nrng, style)
            item["file"] = item["video_id"]
        else:
            movie_no = {"train": 1, "val": 501, "test": 1001}[split] + i // per_movie
            movie = f"{movie_no:04d}_{MOVIE_TITLES[(movie_no - 1) % len(MOVIE_TITLES)]}"
            k = i % per_movie
            begin = 1000 + 3500 * k + int(nrng.integers(0, 400))
            end = begin + round(1000 * n_frames / fps)
            item["times"] = (lsmdc_time(begin), lsmdc_time(end))
            item["video_id"] = f"{movie}_{item['times'][0]}-{item['times'][1]}"
            item["file"] = f"{movie}/{item['video_id']}.avi"
            repeat = split == "train" and trng.random() < scale.lsmdc_repeat_prob
            item["texts"] = clip_captions(trng, clip, difficulty, style, 2 if repeat else 1)
        items.append(item)
    names = [it["video_id"] for it in items]
    if len(set(names)) != len(names):  # pragma: no cover - astronomically unlikely
        raise RuntimeError(f"synthetic {domain}/{split}: duplicate video names")
    return items


def _render_task(args) -> None:
    path, clip, domain, difficulty, size, n_frames, fps, pixel_seed = args
    style = DOMAINS[domain]
    frames = render_frames(
        clip, style, difficulty, size, clip_times(n_frames), np.random.default_rng(pixel_seed)
    )
    encode_video(path, frames, fps, style.codec)


def render_clip(
    clip: ClipSpec, domain: str, difficulty: Difficulty, size: int, n_frames: int, pixel_seed
) -> np.ndarray:
    """The frames a written video holds, before compression (for inspection and tests)."""
    return render_frames(
        clip,
        DOMAINS[domain],
        difficulty,
        size,
        clip_times(n_frames),
        np.random.default_rng(pixel_seed),
    )


def _item_metadata(it: dict) -> dict:
    return {
        "video_id": it["video_id"],
        "file": it["file"],
        "attributes": it["clip"].attributes(),
        "texts": [{"text": t, "mention": m} for t, m in it["texts"]],
    }


def _pretrain_chunk(args) -> list[tuple[np.ndarray, str, dict]]:
    seed, start, stop, scale, difficulty = args
    return [pretrain_pair(seed, i, scale, difficulty, HELD_OUT) for i in range(start, stop)]


@contextlib.contextmanager
def _parallel_map(workers: int):
    """`map` over `workers` processes (results in order), or the built-in map for one."""
    if workers <= 1:
        yield lambda fn, items, chunksize=1: map(fn, items)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield pool.map


def _pretrain(out: Path, scale: Scale, difficulty: Difficulty, seed: int, pmap=map) -> dict:
    """Single frames with captions from every domain's wording and the neutral, anchor-like one.

    This is the held-out stream of `pretrain_pairs`: the toy CLIP trains on the other stream and
    is measured on this one. Rendered in chunks by `pmap`; pair i is the same in any chunk.
    """
    n, size = scale.pretrain, scale.size
    images = np.empty((n, size, size, 3), np.uint8)
    captions, meta = [], []
    chunks = [(seed, start, min(n, start + PRETRAIN_CHUNK), scale, difficulty)
              for start in range(0, n, PRETRAIN_CHUNK)]
    pairs = (pair for chunk in pmap(_pretrain_chunk, chunks) for pair in chunk)
    for i, (image, text, pair_meta) in enumerate(pairs):
        images[i] = image
        captions.append(text)
        meta.append(pair_meta)
    folder = out / "pretrain"
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "images.npy", images)
    write_json(folder / "captions.json", captions, indent=0)
    write_json(folder / "metadata.json", meta)
    vocab = {w.strip(".,:").lower() for c in captions for w in c.split()}
    anchor_words = {w.lower() for label in ANCHOR_LABELS for w in label.split()}
    return {
        "images": "pretrain/images.npy",
        "captions": "pretrain/captions.json",
        "metadata": "pretrain/metadata.json",
        "count": n,
        "shape": list(images.shape),
        "dtype": "uint8",
        "anchor_word_coverage": round(len(anchor_words & vocab) / len(anchor_words), 3),
    }


def _is_ours(out: Path) -> bool:
    """Whether `out` holds an earlier output of this generator (safe to replace)."""
    try:
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("generator") == GENERATOR


def _prepare(out: Path, overwrite: bool) -> None:
    """Removes an earlier synthetic benchmark in `out`; refuses to delete anything else.

    A folder whose manifest says this generator wrote it is replaced (a changed scale or seed must
    not leave stale clips behind); other files under the names we write need `overwrite`. Files
    under other names are never touched.
    """
    present = [name for name in OWNED if (out / name).exists()]
    if present and not (overwrite or _is_ours(out)):
        raise FileExistsError(
            f"{out} already holds {', '.join(present)} not written by calm synth; "
            "pass overwrite=True (calm synth --force) to replace them"
        )
    for name in present:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def generate(
    out_dir: str | Path,
    scale: str = "tiny",
    seed: int = 0,
    difficulty: Difficulty | None = None,
    workers: int | None = None,
    overwrite: bool = False,
) -> dict:
    """Writes the synthetic benchmark under `out_dir` and returns the manifest plus timings.

    Layout: `<out>/<domain>/annotations/...`, `<out>/<domain>/videos/...`,
    `<out>/<domain>/metadata.json` (every clip's attributes and what each text names),
    `<out>/anchors.txt`, `<out>/pretrain/{images.npy,captions.json,metadata.json}`,
    `<out>/manifest.json`. Same seed, scale and difficulty: byte-identical annotation files and
    videos that decode to identical frames. `workers` > 1 renders videos and pretraining pairs in
    that many processes (None: one per available core); the files do not depend on it.
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {sorted(SCALES)}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    workers = available_cores() if workers is None else workers
    sc = SCALES[scale]
    difficulty = difficulty or Difficulty()
    out = Path(out_dir)
    _prepare(out, overwrite)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    tasks = []
    domains: list[dict] = []
    for domain in DOMAIN_ORDER:
        t0 = time.perf_counter()
        style = DOMAINS[domain]
        n_frames, fps = sc.frames[domain]
        root = out / domain
        ann, vids = root / "annotations", root / "videos"
        if domain == "msrvtt":
            train = _build_items(domain, "train", sc.train + sc.val, 0, sc, difficulty, seed)
            test = _build_items(domain, "test", sc.test, sc.train + sc.val, sc, difficulty, seed)
            splits = {"train": train, "test": test}
            files = write_msrvtt(ann, train, test, fps, n_frames)
            test_mentions = [it["texts"][it["jsfusion"]][1] for it in test]
            loader_options = {"val_size": sc.val}
        else:
            splits = {
                s: _build_items(domain, s, n, 0, sc, difficulty, seed)
                for s, n in (("train", sc.train), ("val", sc.val), ("test", sc.test))
            }
            if domain == "didemo":
                files = write_didemo(ann, splits)
                test_mentions = [
                    merge_mentions([m for _, m in it["texts"]]) for it in splits["test"]
                ]
            else:
                files = write_lsmdc(ann, splits)
                test_mentions = [it["texts"][0][1] for it in splits["test"]]
            loader_options = {}
        write_json(
            root / "metadata.json",
            {
                "domain": domain,
                "splits": {s: [_item_metadata(it) for it in items] for s, items in splits.items()},
            },
        )
        for items in splits.values():
            for it in items:
                tasks.append(
                    (
                        vids / it["file"],
                        it["clip"],
                        domain,
                        difficulty,
                        sc.size,
                        n_frames,
                        fps,
                        it["pixel_seed"],
                    )
                )
        test_clips = [it["clip"].attributes() for it in splits["test"]]
        oracle = oracle_recall_at_1(test_mentions, list(range(len(test_clips))), test_clips)
        if domain == "didemo":
            words = [sum(len(t.split()) for t, _ in it["texts"]) for it in splits["test"]]
        else:
            words = [
                len(t.split()) for items in splits.values() for it in items for t, _ in it["texts"]
            ]
        domains.append(
            {
                "name": domain,
                "loader": style.loader,
                "format": style.benchmark,
                "annotations": f"{domain}/annotations",
                "videos": f"{domain}/videos",
                "metadata": f"{domain}/metadata.json",
                "loader_options": loader_options,
                "splits": files,
                "frames": n_frames,
                "fps": fps,
                "duration_s": round(n_frames / fps, 3),
                "codec": style.codec,
                "containers": [e for e, _ in style.containers],
                "test_oracle": oracle,
                "mean_words_per_text": round(float(np.mean(words)), 2),
                "style": asdict(style),
            }
        )
        timings[f"{domain}_annotations_s"] = round(time.perf_counter() - t0, 3)

    with _parallel_map(workers) as pmap:
        t0 = time.perf_counter()
        # chunks of 16 clips: few enough round trips, small enough to keep every process busy
        list(pmap(_render_task, tasks, chunksize=16))
        timings["videos_s"] = round(time.perf_counter() - t0, 3)

        t0 = time.perf_counter()
        write_anchors(out / "anchors.txt")
        pretrain = _pretrain(out, sc, difficulty, seed, pmap)
        timings["pretrain_s"] = round(time.perf_counter() - t0, 3)

    manifest = {
        "name": "calm-synthetic",
        "format_version": FORMAT_VERSION,
        "generator": GENERATOR,
        "seed": seed,
        "scale": scale,
        "video": {
            "width": sc.size,
            "height": sc.size,
            "pix_fmt": "yuv420p",
            "frames": {d: sc.frames[d][0] for d in DOMAIN_ORDER},
            "fps": {d: sc.frames[d][1] for d in DOMAIN_ORDER},
        },
        "domains": domains,
        "anchors": {"file": "anchors.txt", "count": len(ANCHOR_LABELS)},
        "pretrain": pretrain,
        "difficulty": difficulty.to_json(),
        "scale_spec": asdict(sc),
    }
    write_json(out / "manifest.json", manifest, indent=2)
    timings["total_s"] = round(time.perf_counter() - t_start, 3)
    return {**manifest, "out_dir": str(out), "videos_written": len(tasks), "workers": workers,
            "timings": timings}
