"""The web page's models and datasets, loaded once through the project's Kedro catalog.

The page runs the ``speak`` pipeline's own ``load_speaker`` node on the catalog entries that
node names (latest versions, or ``load_versions``), so page and pipeline load the same
models with the same code; uploads are decoded by the catalog's ``speak_recordings``
dataset, pointed at the uploaded file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kedro.framework.project import pipelines
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from wavy_pipeline.datasets.recordings import RecordingsDataset
from wavy_pipeline.pipelines.speak.pipeline import LOAD_NODE
from wavy_pipeline.speak.core import Speaker


@dataclass
class Loaded:
    """What the page needs: the models, the upload decoder, the corpus images, parameters."""

    speaker: Speaker
    recordings: RecordingsDataset
    corpus_images: Mapping[str, Any]
    params: dict[str, Any]


def load(
    project_path: str | os.PathLike = ".",
    env: str | None = None,
    load_versions: Mapping[str, str] | None = None,
    runtime_params: Mapping[str, Any] | None = None,
) -> Loaded:
    """Load the ``speak`` models from the project's catalog, once."""
    project_path = Path(project_path).resolve()
    bootstrap_project(project_path)
    session = KedroSession.create(
        project_path=project_path, env=env, runtime_params=dict(runtime_params or {})
    )
    context = session.load_context()
    # the catalog `kedro run --load-versions` would build (KedroSession.run calls this too)
    catalog = context._get_catalog(load_versions=dict(load_versions or {}))
    node = next(n for n in pipelines["speak"].nodes if n.name == LOAD_NODE)
    (speaker,) = node.run({name: catalog.load(name) for name in node.inputs}).values()
    return Loaded(
        speaker=speaker,
        recordings=catalog.get("speak_recordings"),
        corpus_images=catalog.load("raw_image_files"),
        params=catalog.load("params:speak"),
    )
