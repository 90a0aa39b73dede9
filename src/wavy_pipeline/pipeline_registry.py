"""Project pipelines."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

# Not in the default run: `foundation` (demo only; its outputs, the stand-in encoders, are
# committed) and `speak` (turns your recordings into pictures: `--pipelines speak`).
NOT_IN_DEFAULT = {"foundation", "speak"}


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    Kedro 1.7 may discover only the pipelines named on the command line, so nothing here
    assumes a particular one is present.

    Returns:
        A mapping from pipeline names to ``Pipeline`` objects.
    """
    pipelines = find_pipelines(raise_errors=True)
    pipelines["__default__"] = sum(
        (p for name, p in pipelines.items() if name not in NOT_IN_DEFAULT | {"__default__"}),
        Pipeline([]),
    )
    return pipelines
