"""`calm search --index INDEX "query" | --image FILE | --like VIDEO [-k 10] [--json]`: ranked
clips for a text, a still image, or videos like a given one."""

from __future__ import annotations

import json


def register(sub) -> None:
    from calm.search.filters import add_filter_args

    p = sub.add_parser("search", help="find clips in an index by text, image or example video "
                       "(see `calm index`)")
    p.add_argument("--index", required=True, help="an index folder written by `calm index`")
    p.add_argument("query", nargs="?", help="what to look for, in words")
    p.add_argument("--image", help="an image file: clips that look like it")
    p.add_argument("--like", metavar="VIDEO",
                   help="an indexed path (as listed in results) or any video file: similar clips")
    p.add_argument("-k", type=int, default=10, help="number of results (1-100, default 10)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--checkpoint", help="the index's checkpoint, when it has moved since indexing")
    p.add_argument("--shortlist", type=int, default=None,
                   help="videos scored exactly after the mean-vector shortlist (default 500)")
    add_filter_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from calm.cli.common import UserError
    from calm.search.filters import filters_from_args
    from calm.search.searcher import DEFAULT_SHORTLIST, MAX_K, Searcher, format_results

    if not 1 <= args.k <= MAX_K:
        raise UserError(f"-k must be between 1 and {MAX_K}, got {args.k}")
    given = [x is not None for x in (args.query, args.image, args.like)]
    if sum(given) != 1:
        raise UserError("give exactly one of: a text query, --image FILE, --like VIDEO")
    if args.query is not None and not args.query.strip():
        raise UserError("the query is empty")
    filters = filters_from_args(args)
    searcher = Searcher.open(args.index, args.checkpoint,
                             shortlist=args.shortlist or DEFAULT_SHORTLIST)
    if args.image is not None:
        result = searcher.search_image(args.image, args.k, filters=filters)
    elif args.like is not None:
        result = searcher.search_like(args.like, args.k, filters=filters)
    else:
        result = searcher.search(args.query, args.k, filters=filters)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(format_results(result))
    return 0
