"""`calm caption --checkpoint PATH VIDEO...`: one generated caption per video file."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("caption", help="caption video files with a captioning checkpoint")
    p.add_argument("--checkpoint", required=True, help="a calm captioning .safetensors checkpoint")
    p.add_argument("videos", nargs="+", metavar="VIDEO")
    p.add_argument("--beam-size", type=int, default=None)
    p.add_argument("--frames", type=int, default=None, help="frames per clip (default: the config's)")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from calm.cli.common import UserError
    from calm.data.errors import VideoDecodeError
    from calm.data.video import FrameSampler, FrameSpec
    from calm.engine.models import open_model
    from calm.engine.runtime import pick_device
    from calm.engine.tasks import task_for

    model, cfg, _ = open_model(args.checkpoint)
    if not task_for(cfg).generates_captions:
        raise UserError(f"{args.checkpoint} is a {cfg.task} checkpoint, not a captioning one")
    device = pick_device(cfg.train.device)
    model = model.to(device).eval()
    pre = model.backbone.preprocess
    sampler = FrameSampler(FrameSpec(args.frames or cfg.data.num_frames, pre.image_size, pre.mean,
                                     pre.std), mode="test")
    failed = 0
    for path in args.videos:
        try:
            frames, mask = sampler(path)
        except VideoDecodeError as exc:
            print(f"{path}\terror: {exc.reason}")
            failed += 1
            continue
        with torch.no_grad():
            text = model.caption(frames[None].to(device), mask[None].to(device),
                                 beam_size=args.beam_size)[0]
        print(f"{path}\t{text}")
    return 1 if failed else 0
