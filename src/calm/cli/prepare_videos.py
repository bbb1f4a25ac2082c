"""`calm prepare-videos --src DIR --dst DIR --fps F --short-side S`: re-encode a video folder."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "prepare-videos",
        help="re-encode every video under a folder to H.264 mp4 at a fixed fps and short side",
        description="Re-encodes every video under --src (recursively, layout kept) to H.264 mp4 "
        "in --dst, skipping outputs that already exist, and writes dst/manifest.jsonl. "
        "Exits 1 when any video failed; the manifest says why.",
    )
    p.add_argument("--src", required=True, help="folder of source videos (searched recursively)")
    p.add_argument("--dst", required=True, help="output folder (created if missing)")
    p.add_argument("--fps", type=float, required=True, help="output frame rate, e.g. 3 or 10")
    p.add_argument(
        "--short-side", type=int, required=True, help="output short side (even), e.g. 224"
    )
    p.add_argument("--workers", type=int, default=2, help="parallel processes (default 2)")
    p.add_argument("--ext", default=".mp4", help="output extension (default .mp4)")
    p.add_argument("--crf", type=int, default=23, help="x264 quality, lower is better (default 23)")
    p.add_argument("--preset", default="veryfast", help="x264 preset (default veryfast)")
    p.add_argument(
        "--gop-seconds",
        type=float,
        default=1.0,
        help="seconds between keyframes (default 1: lets the sampler seek instead of decode)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from calm.data.prepare import EncodeSettings, prepare_videos

    ext = args.ext if args.ext.startswith(".") else f".{args.ext}"
    settings = EncodeSettings(
        fps=args.fps,
        short_side=args.short_side,
        crf=args.crf,
        preset=args.preset,
        gop_seconds=args.gop_seconds,
        ext=ext,
    )
    results = prepare_videos(
        args.src, args.dst, settings, workers=max(1, args.workers), progress=not args.no_progress
    )
    counts = {s: sum(r.status == s for r in results) for s in ("ok", "skipped", "failed")}
    print(
        f"prepare-videos: {len(results)} videos: {counts['ok']} ok, {counts['skipped']} skipped, "
        f"{counts['failed']} failed; manifest: {args.dst}/manifest.jsonl"
    )
    for r in results:
        if r.status == "failed":
            print(f"  failed: {r.src}: {r.reason}")
    return 1 if counts["failed"] else 0
