"""Moment annotations for the synthetic benchmark: DiDeMo-style events at known times.

Longer clips are made by joining cuts of a generated benchmark's clips end to end; each cut is
an event whose span in the joined clip is known to the frame, and whose captions are its source
clip's captions. A moment localiser (`calm search`'s matching moment) is then scored against
those spans with `calm.metrics.moments`.

    OUT/videos/joined000.mp4 ...
    OUT/moments.json   {"format", "source", "split", "fps", "videos": [{"video", "duration",
                        "events": [{"start", "end", "source", "captions"}]}]}

Times are seconds from the joined clip's start; the joined clip has frame i at i / fps.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np

from calm.data.synthetic.writer import encode_video

FORMAT = "calm-moments-v1"
MIN_CUT = 4  # frames: a shorter event is below what a few sampled frames can resolve


def decode_frames(path: Path) -> np.ndarray:
    """Every frame of a clip as uint8 RGB [T, H, W, 3]."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def write_moment_set(synth: Path, out: Path, videos: int = 40, parts: tuple[int, int] = (2, 3),
                     split: str = "test", domain: str = "msrvtt", seed: int = 0,
                     codec: str = "libx264") -> dict:
    """Joins cuts of `domain`/`split` clips of the benchmark in `synth` into `videos` longer clips
    of `parts` (min, max) events each; returns (and writes) the annotations."""
    from calm.data.benchmarks.common import load_split

    synth, out = Path(synth), Path(out)
    manifest = json.loads((synth / "manifest.json").read_text())
    entry = next(d for d in manifest["domains"] if d["name"] == domain)
    fps = int(manifest["video"]["fps"][domain])
    ann = load_split(entry["loader"], synth / entry["annotations"], synth / entry["videos"], split,
                     entry.get("loader_options") or {})
    captions: dict[int, list[str]] = {}
    for t in ann.texts:
        captions.setdefault(t.video_index, []).append(t.text)
    sources = sorted(captions)
    rng = np.random.default_rng(seed)
    records = []
    for j in range(videos):
        count = int(rng.integers(parts[0], parts[1] + 1))
        chosen = rng.choice(len(sources), count, replace=False)
        frames, events, offset = [], [], 0
        for c in chosen:
            record = ann.videos[sources[c]]
            clip = decode_frames(record.path)
            length = int(rng.integers(min(MIN_CUT, len(clip)), len(clip) + 1))
            first = int(rng.integers(0, len(clip) - length + 1))
            frames.append(clip[first : first + length])
            events.append({"start": offset / fps, "end": (offset + length) / fps,
                           "source": record.video_id, "captions": captions[sources[c]]})
            offset += length
        name = f"videos/joined{j:03d}.mp4"
        encode_video(out / name, np.concatenate(frames), fps, codec)
        records.append({"video": name, "duration": offset / fps, "events": events})
    data = {"format": FORMAT, "source": str(synth), "domain": domain, "split": split, "fps": fps,
            "seed": seed, "videos": records}
    (out / "moments.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    return data
