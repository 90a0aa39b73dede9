"""The local web page: record or upload → images, what the model heard, neighbours, timings.

FastAPI + one static page (``assets/speak/index.html``: a MediaRecorder record button and a
file upload; the page converts the recording to WAV in the browser). Requests go through a
:class:`~wavy_pipeline.speak.queue.RequestQueue` onto the one loaded model; a full queue
answers HTTP 503 "busy, try again" at once. Bad input gets a JSON ``{"error": ...}`` with
the reason (HTTP 4xx), and an unexpected failure HTTP 500 with its message: the server
logs it and keeps serving.

    python -m wavy_pipeline.speak [--env flickr8k] [--host H] [--port P] [--load-versions ...]
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import tempfile
import time
from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from wavy_pipeline.speak.core import STAGES, Heard, encode_png
from wavy_pipeline.speak.loading import Loaded
from wavy_pipeline.speak.queue import Busy, RequestQueue

logger = logging.getLogger(__name__)

PAGE = files("wavy_pipeline") / "assets" / "speak" / "index.html"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def safe_name(name: str | None) -> str:
    """A file name for an upload: its base name, odd characters replaced, never empty."""
    base = _UNSAFE.sub("_", Path(name or "").name).strip("._")
    return base[:100] or "recording"


def answer(heard: Heard, pngs: list[bytes]) -> dict[str, Any]:
    """The JSON the page shows for one recording."""
    return {
        "name": heard.name,
        "transcript": heard.transcript,
        "images": ["data:image/png;base64," + base64.b64encode(p).decode() for p in pngs],
        "seeds": heard.seeds,
        "neighbours": [
            {"image_id": image_id, "score": score, "src": f"/api/corpus/{image_id}"}
            for image_id, score in heard.neighbours
        ],
        "timings": heard.timings,
        "source_rate": heard.source_rate,
        "source_seconds": heard.source_seconds,
        "cropped": heard.cropped,
    }


def create_app(loaded: Loaded) -> FastAPI:
    """The web app around models loaded once (:func:`wavy_pipeline.speak.loading.load`)."""
    server = loaded.params["server"]
    limit = int(server["max_upload_mb"] * 2**20)
    queue = RequestQueue(server["queue_size"])
    app = FastAPI(title="wavy_pipeline: speak to it")
    app.state.queue = queue

    def run(name: str, data: bytes) -> tuple[Heard, list[bytes]]:
        # on the queue's one worker thread: decode through the catalog's dataset, then the
        # same function as the `speak` pipeline
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_bytes(data)
            ((key, load),) = loaded.recordings.at(path).load().items()
            heard = loaded.speaker.speak(key, load)
        if heard.reason:  # libsndfile names the file it opened: the temporary copy
            heard.reason = heard.reason.replace(str(path), name)
        start = time.perf_counter()
        pngs = encode_png(heard.images)
        if heard.reason is None:
            heard.timings[STAGES[-1]] = time.perf_counter() - start
        return heard, pngs

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE.read_text(encoding="utf-8")

    @app.get("/api/status")
    def status() -> dict[str, Any]:
        return queue.status() | {"max_upload_mb": server["max_upload_mb"]}

    @app.get("/api/corpus/{image_id}")
    def corpus_image(image_id: str) -> Response:
        if image_id not in loaded.corpus_images:
            return _error(404, f"no corpus image {image_id!r}")
        (png,) = encode_png([loaded.corpus_images[image_id]().convert("RGB")])
        return Response(png, media_type="image/png")

    @app.post("/api/speak")
    async def speak(request: Request, name: str = "recording.wav") -> JSONResponse:
        """The request body is the audio file itself (any format libsndfile reads)."""
        body, size = bytearray(), 0
        # read to the end even past the limit (keeping nothing): a reply sent while the
        # client still sends reaches it as "connection reset", not as the reason
        async for chunk in request.stream():
            size += len(chunk)
            if size <= limit:
                body += chunk
        if size > limit:
            mb = server["max_upload_mb"]
            return _error(413, f"upload over the limit of {mb:g} MB (speak.max_upload_mb)")
        if not body:
            return _error(400, "empty upload: no bytes received")
        try:
            future = queue.submit(run, safe_name(name), bytes(body))
        except Busy as busy:
            return _error(503, str(busy))
        try:
            heard, pngs = await asyncio.wrap_future(future)
        except Exception as exc:  # the server must keep serving whatever one request does
            logger.exception("speak request %s failed", name)
            return _error(500, f"internal error: {type(exc).__name__}: {exc}")
        if heard.reason:
            return _error(422, heard.reason)
        return JSONResponse(answer(heard, pngs))

    return app
