"""`calm serve --index INDEX [--host 127.0.0.1] [--port 8000]`: a search page in the browser."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("serve", help="a web page to search an index and play the matching moments")
    p.add_argument("--index", required=True, help="an index folder written by `calm index`")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--checkpoint", help="the index's checkpoint, when it has moved since indexing")
    p.set_defaults(func=run)


def run(args) -> int:
    from calm.cli.common import UserError

    try:
        from calm.search.server import serve
    except ImportError as exc:
        raise UserError(
            f"calm serve needs starlette and uvicorn ({exc}); install them with "
            "pip install 'calm[serve]'"
        ) from None
    from calm.search.searcher import Searcher

    searcher = Searcher.open(args.index, args.checkpoint)
    print(f"serving {args.index} ({len(searcher.index)} videos) on http://{args.host}:{args.port}/")
    serve(searcher, args.host, args.port)
    return 0
