"""What the diagnostic scripts share: the latest default run's datasets, and drawing and
judging images the way `generation` and `evaluation` do (on the CPU, fp32)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from wavy_pipeline.generation.generate import prepare_pipeline
from wavy_pipeline.metrics.attribute_judge import AttributeJudge

ROOT = Path(__file__).resolve().parents[1]


def load_latest(names: Mapping[str, str | None]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``{dataset: version or None (latest)}`` loaded from the project's catalog, and its
    parameters; Kedro's and the libraries' chatter quietened."""
    warnings.filterwarnings("ignore")
    logging.getLogger("kedro").setLevel(logging.WARNING)
    bootstrap_project(ROOT)
    with KedroSession.create(project_path=ROOT) as session:
        context = session.load_context()
        loaded = {name: context.catalog.load(name, version=v) for name, v in names.items()}
        return loaded, context.params


def drawing(pipe: Any, params: Mapping[str, Any]) -> tuple[AttributeJudge, dict[str, Any]]:
    """The evaluation's attribute judge, and ``pipe``'s call options as `generation` sets
    them (steps, guidance), with ``pipe`` placed on the CPU in fp32."""
    judge = AttributeJudge(
        palette={k: tuple(v) for k, v in params["evaluation"]["palette"].items()}
    )
    prepare_pipeline(pipe, device="cpu", dtype="auto")
    options = {
        "num_inference_steps": params["generation"]["steps"],
        "guidance_scale": params["generation"]["guidance_scale"],
    }
    return judge, options
