"""`calm synth --out DIR --scale {tiny,small,default,large} --seed N`: write the synthetic benchmark."""

from __future__ import annotations

SCALE_NAMES = ("tiny", "small", "default", "large")  # calm.data.synthetic.SCALES (tested)


def register(sub) -> None:
    p = sub.add_parser(
        "synth",
        help="generate the synthetic video-text benchmark (3 domains in MSR-VTT, DiDeMo and "
        "LSMDC formats, anchor labels, image-caption pretraining split)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument(
        "--scale",
        choices=SCALE_NAMES,
        default="default",
        help="tiny: seconds, for tests; small: ~10 s; default: the demo's data (about a minute); "
        "large: the default's training clips and 1,000 test clips per domain (the evidence grids)",
    )
    p.add_argument("--seed", type=int, default=0, help="same seed, same files (default 0)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes rendering videos and pretraining pairs (default: one per "
                        "available core); the files do not depend on it")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace msrvtt/, didemo/, lsmdc/, pretrain/, anchors.txt, manifest.json in DIR even "
        "if calm synth did not write them (an earlier calm synth output is always replaced)",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from calm.cli.common import UserError
    from calm.data.synthetic import generate

    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be >= 1, got {args.workers}")
    try:
        summary = generate(
            args.out, scale=args.scale, seed=args.seed, workers=args.workers, overwrite=args.force
        )
    except FileExistsError as exc:
        raise UserError(str(exc)) from None
    print(f"wrote the {args.scale} synthetic benchmark (seed {args.seed}) to {summary['out_dir']}")
    for d in summary["domains"]:
        sizes = ", ".join(
            f"{split} {info['videos']} videos / {info['texts']} texts"
            for split, info in d["splits"].items()
            if isinstance(info, dict)
        )
        print(
            f"  {d['name']:7s} ({d['format']} format, loader '{d['loader']}'): {sizes}; "
            f"test oracle R@1 {d['test_oracle']['oracle_t2v_r1']:.1f}"
        )
    pre = summary["pretrain"]
    print(f"  pretrain: {pre['count']} image-caption pairs; anchors: {summary['anchors']['count']}")
    print(f"  {summary['videos_written']} videos in {summary['timings']['total_s']:.1f} s")
    return 0
