"""What the ``speak`` pipeline stores: one index row per image, and an HTML gallery."""

from __future__ import annotations

import html
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from wavy_pipeline.core.images import ImageCollection
from wavy_pipeline.speak.core import STAGES, Heard


def image_rows(heard: Heard) -> Iterator[tuple[dict, Any]]:
    """``(index row, image)`` for each image of a recording; the row repeats what the model
    heard, its nearest corpus images and the time of each stage."""
    stem = heard.name.replace("/", "__")
    common = {
        "recording": heard.name,
        "transcript": heard.transcript,
        "neighbours": [image_id for image_id, _ in heard.neighbours],
        "neighbour_scores": [score for _, score in heard.neighbours],
        "source_rate": heard.source_rate,
        "source_seconds": heard.source_seconds,
        "cropped": heard.cropped,
    } | {f"seconds_{stage}": heard.timings.get(stage) for stage in STAGES[:-1]}
    for k, (seed, image) in enumerate(zip(heard.seeds, heard.images, strict=True)):
        yield common | {"image": k, "seed": seed, "file": f"{stem}.{k}.png"}, image


def gallery_files(images: ImageCollection, corpus_images: Mapping[str, Callable]) -> dict:
    """``{file: content}`` of the gallery folder: ``gallery.html`` beside copies of the made
    images and of the neighbours from the corpus (the page is self-contained)."""
    index = images.index
    files: dict[str, Any] = {}
    sections = []
    for recording, rows in index.groupby("recording", sort=False) if len(index) else []:
        first = rows.iloc[0]
        made = []
        for file in rows["file"]:
            files[file] = images.image(file)
            made.append(f'<img src="{html.escape(file)}" alt="made from {html.escape(file)}">')
        near = []
        for image_id, score in zip(first["neighbours"], first["neighbour_scores"], strict=True):
            name = f"corpus_{image_id}.png"
            files[name] = corpus_images[image_id]().convert("RGB")
            near.append(
                f'<figure><img src="{html.escape(name)}" alt="{html.escape(image_id)}">'
                f"<figcaption>{html.escape(image_id)} {score:.2f}</figcaption></figure>"
            )
        transcript = first["transcript"]
        heard = "(no CTC head)" if transcript is None else html.escape(repr(transcript))
        sections.append(
            f"<section><h2>{html.escape(recording)}</h2><p>heard: {heard}</p>"
            f"<div>{''.join(made)}</div><p>nearest corpus images (cosine):</p>"
            f"<div>{''.join(near)}</div></section>"
        )
    body = "".join(sections) or "<p>No usable recording (see speak_quarantine).</p>"
    files["gallery.html"] = (
        "<!doctype html><meta charset=utf-8><title>speak gallery</title>"
        "<style>img{width:128px;image-rendering:pixelated;margin:4px}"
        "figure{display:inline-block;margin:4px}</style>"
        f"<h1>What the recordings became</h1>{body}\n"
    )
    return files
