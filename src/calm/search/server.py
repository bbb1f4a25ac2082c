"""`calm serve`: a search page and a JSON API over one index (Starlette + uvicorn, no build step).

    GET /                       the page (static HTML + vanilla JS)
    GET /api/search?q=...&k=... {"query", "results": [{"path", "score", "start", "end",
                                 "resolution", "anchors": [[label, p], ...], "duplicates"}], "confidence": {"calibrated",
                                 "probability", "threshold", "method"}, "confident", "note"}
    GET /api/similar?path=...&k=...   videos like an indexed one (frame-mean cosine), same shape
    POST /api/image?k=...       body: an image file's bytes; videos that look like it, same shape
    all three take the filters under, glob, min_duration, max_duration, modified_after,
    modified_before (see `calm.search.filters`); the answer's "filters" says what they kept
    GET /media/<path>           an indexed video, with HTTP range requests (the page seeks in it)
    GET /thumb/<path>           its thumbnail

Only files listed in the index are served: the requested path must equal an indexed relative
path exactly, and its real location (symlinks resolved) must still lie inside the indexed
folder. Anything else -- traversal, encoded or not, absolute paths, symlinks that now lead out
of the folder, files added after indexing -- gets 404. The server binds 127.0.0.1 unless told
otherwise; k and the query length are bounded.
"""

from __future__ import annotations

import threading
from importlib import resources
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from calm.data.errors import DataError
from calm.search.filters import PARAMS, FilterError, Filters
from calm.search.searcher import MAX_K, Searcher

MAX_QUERY_CHARS = 300
MAX_IMAGE_BYTES = 20 * 2**20
DEFAULT_K = 12


def _page() -> str:
    return resources.files("calm.search").joinpath("static/page.html").read_text(encoding="utf-8")


def _not_found() -> Response:
    return JSONResponse({"error": "not found"}, status_code=404)


def served_file(searcher: Searcher, rel: str) -> Path | None:
    """The real file of an indexed path, or None when it is not indexed or leads outside the folder."""
    index = searcher.index
    if rel not in index.row_of:
        return None
    root = index.root.resolve()
    try:
        real = (root / rel).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not real.is_relative_to(root) or not real.is_file():
        return None
    return real


def create_app(searcher: Searcher) -> Starlette:
    lock = threading.Lock()  # one query at a time: each takes milliseconds and uses all threads
    page = _page()

    async def home(request: Request) -> Response:
        return HTMLResponse(page)

    def _k(request: Request) -> int | JSONResponse:
        try:
            k = int(request.query_params.get("k", DEFAULT_K))
        except ValueError:
            return JSONResponse({"error": "k must be an integer"}, status_code=400)
        if not 1 <= k <= MAX_K:
            return JSONResponse({"error": f"k must be between 1 and {MAX_K}"}, status_code=400)
        return k

    def _filters(request: Request) -> Filters | JSONResponse:
        try:
            return Filters.parse(**{name: request.query_params.get(name) for name in PARAMS})
        except FilterError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

    def _k_and_filters(request: Request):
        """(k, filters) of a request, or the 400 response saying which parameter is wrong."""
        k, filters = _k(request), _filters(request)
        for bad in (k, filters):
            if isinstance(bad, Response):
                return bad
        return k, filters

    def _answered(request: Request, run) -> Response:
        """Parses k and the filters, runs `run(k, filters)` under the lock and answers with
        its result (or the 400 response of a bad parameter)."""
        parsed = _k_and_filters(request)
        if isinstance(parsed, Response):
            return parsed
        with lock:
            return _answer(run(*parsed))

    def _answer(result) -> JSONResponse:
        body = result.to_json()
        keep = ("path", "score", "start", "end", "resolution", "anchors", "duplicates")
        body["results"] = [{key: r[key] for key in keep} for r in body["results"]]
        return JSONResponse(body)

    def search(request: Request) -> Response:
        query = request.query_params.get("q", "")
        if not query.strip():
            return JSONResponse({"error": "the query parameter q is empty"}, status_code=400)
        if len(query) > MAX_QUERY_CHARS:
            return JSONResponse(
                {"error": f"the query is longer than {MAX_QUERY_CHARS} characters"}, status_code=400
            )
        return _answered(request, lambda k, filters: searcher.search(query, k, filters=filters))

    def similar(request: Request) -> Response:
        rel = request.query_params.get("path", "")
        if rel not in searcher.index.row_of:
            return JSONResponse({"error": "path is not an indexed video"}, status_code=400)
        return _answered(request, lambda k, filters: searcher.search_like(rel, k, filters=filters))

    async def image(request: Request) -> Response:
        parsed = _k_and_filters(request)
        if isinstance(parsed, Response):
            return parsed
        k, filters = parsed
        data = await request.body()
        if not data:
            return JSONResponse({"error": "send the image file as the request body"}, status_code=400)
        if len(data) > MAX_IMAGE_BYTES:
            return JSONResponse({"error": "the image is larger than 20 MiB"}, status_code=413)
        try:
            result = await run_in_threadpool(_search_image, data, k, filters)
        except DataError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return _answer(result)

    def _search_image(data: bytes, k: int, filters: Filters):
        with lock:
            return searcher.search_image(data, k, filters=filters)

    def media(request: Request) -> Response:
        real = served_file(searcher, request.path_params["path"])
        return FileResponse(real) if real else _not_found()

    def thumb(request: Request) -> Response:
        rel = request.path_params["path"]
        if rel not in searcher.index.row_of:
            return _not_found()
        path = searcher.index.thumbnail_path(searcher.index.row_of[rel])
        return FileResponse(path, media_type="image/jpeg") if path.is_file() else _not_found()

    return Starlette(routes=[
        Route("/", home),
        Route("/api/search", search),
        Route("/api/similar", similar),
        Route("/api/image", image, methods=["POST"]),
        Route("/media/{path:path}", media),
        Route("/thumb/{path:path}", thumb),
    ])


def serve(searcher: Searcher, host: str = "127.0.0.1", port: int = 8000) -> None:
    import uvicorn

    uvicorn.run(create_app(searcher), host=host, port=port, log_level="info")
