"""Peak memory and time of chunked xpool scoring at MSVD test size, beside the naive tensor's size.

MSVD test: 670 videos x 12 frames and 27,763 captions. A text-conditioned head pools every video
once per caption, so scoring everything at once builds a texts x videos x dim tensor
(27,763 x 670 x 512 x 4 bytes = 38 GB). `calm.model.scoring.similarity_matrix` walks video chunks
and text chunks instead, so the extra memory is one chunk (text_chunk x video_chunk x dim).

Features are random and the xpool head is randomly initialised: cost does not depend on the
values. Peak memory is the process's resident high-water mark (VmHWM in /proc/self/status),
reset right before scoring when the kernel allows it (`/proc/self/clear_refs`), otherwise read as
a delta; tracemalloc would not see torch's allocator.

Run: python benchmarks/bench_xpool_scoring.py [--texts N] [--videos N] [--frames T] [--dim D]
                                               [--text-chunk N] [--video-chunk N] [--threads N]
With --texts below the full 27,763 the full-size time is also printed, extrapolated linearly in
the number of texts (scoring is a sum of independent text chunks) and labelled as such.
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import torch

from calm.config import FusionConfig, ScoreConfig
from calm.model.fusion import build_fusion
from calm.model.scoring import similarity_matrix

MSVD_TEXTS, MSVD_VIDEOS, MSVD_FRAMES = 27_763, 670, 12


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> bool:
    """Resets VmHWM to the current RSS (Linux >= 4.0); False when not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _gib(kib: float) -> str:
    return f"{kib / 2**20:.2f} GiB"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--texts", type=int, default=MSVD_TEXTS)
    p.add_argument("--videos", type=int, default=MSVD_VIDEOS)
    p.add_argument("--frames", type=int, default=MSVD_FRAMES)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--text-chunk", type=int, default=ScoreConfig().text_chunk)
    p.add_argument("--video-chunk", type=int, default=ScoreConfig().video_chunk)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)

    torch.manual_seed(0)
    head = build_fusion(FusionConfig(name="xpool"), a.dim).eval()
    with torch.no_grad():  # random init (the shipped init is identity projections)
        for param in head.parameters():
            param.add_(0.02 * torch.randn_like(param))
    model = SimpleNamespace(fusion=head, vae=None)  # similarity_matrix only needs these
    text = torch.randn(a.texts, a.dim)
    frames = torch.randn(a.videos, a.frames, a.dim)
    mask = torch.ones(a.videos, a.frames, dtype=torch.bool)
    cfg = ScoreConfig(text_chunk=a.text_chunk, video_chunk=a.video_chunk)

    naive_bytes = a.texts * a.videos * a.dim * 4
    full_naive = MSVD_TEXTS * MSVD_VIDEOS * 512 * 4
    chunk_bytes = min(a.text_chunk, a.texts) * min(a.video_chunk, a.videos) * a.dim * 4
    out_bytes = a.texts * a.videos * 4
    inputs_bytes = (text.numel() + frames.numel()) * 4

    # warm-up on a sliver so one-time allocator/thread-pool costs are not timed
    similarity_matrix(model, text[:8], frames[:4], mask[:4], cfg)

    rss_before = _status_kib("VmRSS")
    exact = _reset_peak()
    hwm_before = _status_kib("VmHWM")
    t0 = time.perf_counter()
    scores = similarity_matrix(model, text, frames, mask, cfg)
    elapsed = time.perf_counter() - t0
    hwm_after = _status_kib("VmHWM")
    assert scores.shape == (a.texts, a.videos) and torch.isfinite(scores).all()

    peak_extra = hwm_after - (rss_before if exact else hwm_before)
    print(
        f"xpool scoring: {a.texts:,} texts x {a.videos:,} videos x {a.frames} frames, dim {a.dim}, "
        f"chunks text {a.text_chunk} x video {a.video_chunk}, {torch.get_num_threads()} threads"
    )
    print(
        f"  time                          {elapsed:9.1f} s"
        f"   ({elapsed / (a.texts * a.videos) * 1e6:.2f} us per pair)"
    )
    print(
        f"  peak extra RSS while scoring  {_gib(peak_extra):>9s}"
        f"   ({'VmHWM reset before scoring' if exact else 'VmHWM delta; reset not permitted'})"
    )
    print(f"  of which the score matrix     {_gib(out_bytes / 1024):>9s}")
    print(f"  one chunk (text x video x D)  {_gib(chunk_bytes / 1024):>9s}")
    print(f"  inputs (text + frames)        {_gib(inputs_bytes / 1024):>9s}")
    print(
        f"  naive texts x videos x D fp32 {_gib(naive_bytes / 1024):>9s}"
        f"   ({naive_bytes / 1e9:.1f} GB) at this size"
    )
    if a.texts != MSVD_TEXTS or a.videos != MSVD_VIDEOS or a.frames != MSVD_FRAMES or a.dim != 512:
        scale = (MSVD_TEXTS * MSVD_VIDEOS * MSVD_FRAMES * 512) / (
            a.texts * a.videos * a.frames * a.dim
        )
        print(
            f"  EXTRAPOLATED to full MSVD (27,763 x 670 x 12, dim 512; linear in pairs): "
            f"~{elapsed * scale:.0f} s; peak extra stays ~one chunk + the "
            f"{MSVD_TEXTS * MSVD_VIDEOS * 4 / 2**20:.0f} MiB score matrix "
            f"(naive tensor: {full_naive / 1e9:.1f} GB)"
        )


if __name__ == "__main__":
    main()
