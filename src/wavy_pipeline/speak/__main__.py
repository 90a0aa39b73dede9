"""``python -m wavy_pipeline.speak``: serve the "speak to it" page (``make serve``)."""

from __future__ import annotations

import argparse
import logging
import os

import uvicorn

from wavy_pipeline.speak.app import create_app
from wavy_pipeline.speak.loading import load


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m wavy_pipeline.speak",
        description="Serve the speak page: record or upload → images (models load once).",
    )
    parser.add_argument("--env", default=None, help="Kedro environment (e.g. flickr8k)")
    parser.add_argument("--host", default=None, help="default: speak.server.host")
    parser.add_argument("--port", type=int, default=None, help="default: speak.server.port")
    parser.add_argument(
        "--load-versions",
        default="",
        help="as kedro run: dataset:version,… (e.g. speech_adapter:2026-12-01T10.00.00.000Z)",
    )
    parser.add_argument("--project", default=".", help="project root (default: here)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")  # one progress bar per request is noise
    logging.basicConfig(level=logging.INFO)
    versions = dict(item.split(":", 1) for item in args.load_versions.split(",") if item)
    loaded = load(args.project, env=args.env, load_versions=versions)
    server = loaded.params["server"]
    uvicorn.run(
        create_app(loaded),
        host=args.host or server["host"],
        port=args.port or server["port"],
        log_level="info",
    )


if __name__ == "__main__":
    main()
