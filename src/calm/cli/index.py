"""`calm index --checkpoint CKPT --videos DIR --out INDEX [--workers N] [--calibrate]`: build or
update an index, optionally with a calibrated search confidence.

Prints the video files found, the symbolic links left out (with why), the index's counts and
every file that could not be decoded. Exit status 1 when some file failed (the index of the
others is written all the same), 2 on an error in what was given.

Under `torchrun --nproc-per-node N -m calm index ...` the files to encode are shared across the
N processes (gloo on CPU; with --device cuda, NCCL and one GPU per process) and rank 0 writes
the index (`calm.search.sharded`)."""

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
    p.add_argument("--device", default="cpu",
                   help="cpu or cuda (under torchrun: each process takes its local GPU)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--ivf-above", type=int, default=None, metavar="N",
                   help="from N videos on, build a faiss IVF shortlist (default 200000)")
    cal = p.add_argument_group(
        "confidence calibration",
        "fit P(top result is right) on a split with known answers and store it in the index "
        "(without it, search shows scores only and never abstains)")
    cal.add_argument("--calibrate", action="store_true",
                     help="calibrate on the checkpoint's validation split (its config's data.*)")
    cal.add_argument("--calibration-dataset", help="another benchmark loader (msrvtt, didemo, ...)")
    cal.add_argument("--calibration-annotations", help="its annotation folder")
    cal.add_argument("--calibration-videos", help="its video folder")
    cal.add_argument("--calibration-split", help="its split (default: the config's data.val_split)")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch.distributed as dist

    from calm.cli.common import UserError
    from calm.engine import distributed

    if args.workers < 0:
        raise UserError(f"--workers must be >= 0, got {args.workers}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    env = distributed.init("cuda" if args.device.startswith("cuda") else "cpu")
    try:
        return _run(args, env)
    finally:
        if env.enabled and dist.is_initialized():
            dist.destroy_process_group()


def _run(args, env) -> int:
    from calm.api import load
    from calm.cli.common import UserError
    from calm.search.build import build_index

    device = f"cuda:{env.local_rank}" if env.enabled and args.device.startswith("cuda") else args.device
    try:
        model = load(args.checkpoint, device)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    ivf = {} if args.ivf_above is None else {"ivf_above": args.ivf_above}
    calibration = None
    explicit = [args.calibration_dataset, args.calibration_annotations, args.calibration_videos,
                args.calibration_split]
    if env.is_main and (args.calibrate or any(explicit)):
        from calm.search.calibrate import source_for

        calibration = source_for(model, *explicit)
    report = build_index(model, args.videos, args.out, workers=args.workers,
                         progress=not args.no_progress, batch_size=args.batch_size,
                         calibration=calibration, **ivf)
    if report is None:  # torchrun, not rank 0: this rank encoded its share
        return 0
    left_out = report["left_out"]
    print(f"{report['videos_dir']}: {report['found']} video files found"
          + (f", {len(left_out)} symbolic links left out" if left_out else ""))
    for link in left_out:
        print(f"  left out: {link['path']}: {link['reason']}")
    procs = f" by {report['processes']} processes" if report["processes"] > 1 else ""
    print(f"{report['index']}: {report['indexed']} videos indexed ({report['new']} new, "
          f"{report['kept']} unchanged, {report['removed']} removed), {report['failed']} failed, "
          f"in {report['seconds']:.1f} s{procs}")
    for failure in report["failures"]:
        print(f"  failed: {failure['path']}: {failure['reason']}")
    cal = report.get("calibration")
    if cal is None:
        print("  confidence: uncalibrated (rerun with --calibrate for a probability and abstention)")
    else:
        src = cal["source"]
        print(f"  confidence: {cal['chosen']} calibration on {src['dataset']}/{src['split']} "
              f"({cal['queries']} captions searched among {cal['collection']} videos: "
              f"{cal.get('split_videos', cal['collection'])} of the split, "
              f"{cal.get('competitors', 0)} of the index"
              + (f" (a sample of {cal['competitors_available']})"
                 if cal.get("competitors_available", 0) > cal.get("competitors", 0) else "")
              + "; top-1 right "
              f"{100 * cal['top1_accuracy']:.0f}%): ECE platt {cal['ece']['platt']:.3f}, isotonic "
              f"{cal['ece']['isotonic']:.3f}; 'no confident match' for "
              f"{100 * cal['abstain_correct']:.0f}% of right and "
              f"{100 * (cal['abstain_wrong'] or 0):.0f}% of wrong top results")
    dup = report.get("duplicates")
    if dup is None:
        print("  near-duplicates: not folded (no threshold measured for this model: --calibrate)")
    else:
        joined = ", ".join(f"{k} {100 * v:.0f}%" for k, v in dup["joined"].items())
        print(f"  near-duplicates: frame-mean cosine >= {dup['threshold']:.4f}, measured on "
              f"{dup['copies']} copies per kind (joins {joined}; merges "
              f"{100 * dup['merged_distinct']:.2f}% of {dup['distinct_pairs']} distinct pairs)")
    if report.get("note"):
        print(f"  note: {report['note']}")
    counts = {k: report[k] for k in ("found", "indexed", "new", "kept", "removed", "failed")}
    print(json.dumps({**counts, "left_out": len(left_out)}))
    return 1 if report["failed"] else 0
