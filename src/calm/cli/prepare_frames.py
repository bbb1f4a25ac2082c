"""`calm prepare-frames --src VIDEOS --dst CACHE`: decode every clip once into a frame cache."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "prepare-frames",
        help="decode the frames training and evaluation sample into a frame cache (fast loading)",
        description="Decodes every video under --src once and stores its test-mode frames and "
        "--per-segment train candidates per segment in the cache folder --dst (JPEG or raw "
        "shards plus manifest.jsonl). Resumable: a rerun caches only what is missing. Use the "
        "cache with --set data.frame_cache=DST. Exits 1 when any video failed.",
    )
    p.add_argument("--src", required=True, help="the video folder (data.videos), searched recursively")
    p.add_argument("--dst", required=True, help="cache folder (created, or resumed if present)")
    p.add_argument("--frames", type=int, default=12, help="frames per clip, data.num_frames (12)")
    p.add_argument(
        "--per-segment", type=int, default=3,
        help="train candidates per segment (default 3; odd: the middle one is the test frame); "
        "each epoch draws one per segment. 0: every frame, so that with --format raw training "
        "reads exactly the frames decoding would give",
    )
    p.add_argument("--size", type=int, default=224, help="frame side in pixels, the model's (224)")
    p.add_argument(
        "--format", dest="codec", choices=["jpeg", "raw"], default="jpeg",
        help="jpeg (default, compact) or raw uint8 (lossless, ~10x the disk)",
    )
    p.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")
    p.add_argument("--workers", type=int, default=2, help="parallel processes (default 2)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from calm.data.frame_cache import CacheSettings
    from calm.data.prepare_frames import prepare_frames

    settings = CacheSettings(
        num_frames=args.frames,
        per_segment=args.per_segment,
        image_size=args.size,
        codec=args.codec,
        quality=args.quality,
    )
    results = prepare_frames(
        args.src, args.dst, settings, workers=max(1, args.workers), progress=not args.no_progress
    )
    counts = {s: sum(r.status == s for r in results) for s in ("cached", "skipped", "failed")}
    stored = [r.bytes for r in results if r.status != "failed"]
    per_clip = sum(stored) / len(stored) / 2**20 if stored else 0.0
    print(
        f"prepare-frames: {len(results)} videos: {counts['cached']} cached, "
        f"{counts['skipped']} already cached, {counts['failed']} failed; "
        f"{per_clip:.2f} MiB per clip; cache: {args.dst}"
    )
    for r in results:
        if r.status == "failed":
            print(f"  failed: {r.key}: {r.reason}")
    return 1 if counts["failed"] else 0
