"""`calm index --checkpoint CKPT --videos DIR --out INDEX [--workers N]`: build or update an index.

Prints the video files found, the symbolic links left out (with why), the index's counts and
every file that could not be decoded. Exit status 1 when some file failed (the index of the
others is written all the same), 2 on an error in what was given.
"""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser(
        "index",
        help="encode a folder of videos into a search index (reruns encode only new or changed files)",
    )
    p.add_argument("--checkpoint", required=True, help="a calm retrieval .safetensors checkpoint")
    p.add_argument("--videos", required=True, help="folder scanned recursively for video files")
    p.add_argument("--out", required=True, help="index folder (created, or updated in place)")
    p.add_argument("--workers", type=int, default=2, help="decoding processes (default 2; 0: none)")
    p.add_argument("--batch-size", type=int, default=8, help="clips encoded per forward pass")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from calm.api import load
    from calm.cli.common import UserError
    from calm.search.build import build_index

    if args.workers < 0:
        raise UserError(f"--workers must be >= 0, got {args.workers}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    try:
        model = load(args.checkpoint, args.device)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    report = build_index(model, args.videos, args.out, workers=args.workers,
                         progress=not args.no_progress, batch_size=args.batch_size)
    left_out = report["left_out"]
    print(f"{report['videos_dir']}: {report['found']} video files found"
          + (f", {len(left_out)} symbolic links left out" if left_out else ""))
    for link in left_out:
        print(f"  left out: {link['path']}: {link['reason']}")
    print(f"{report['index']}: {report['indexed']} videos indexed ({report['new']} new, "
          f"{report['kept']} unchanged, {report['removed']} removed), {report['failed']} failed, "
          f"in {report['seconds']:.1f} s")
    for failure in report["failures"]:
        print(f"  failed: {failure['path']}: {failure['reason']}")
    if report.get("note"):
        print(f"  note: {report['note']}")
    counts = {k: report[k] for k in ("found", "indexed", "new", "kept", "removed", "failed")}
    print(json.dumps({**counts, "left_out": len(left_out)}))
    return 1 if report["failed"] else 0
