"""Experiment tracking: training curves, metrics and reports into the run's MLflow run.

kedro-mlflow (the ``tracking`` extra, ``pip install -e ".[tracking]"``) opens one MLflow
run per ``kedro run``, as ``conf/base/mlflow.yml`` says, and logs the parameters every
node takes. :class:`TrackingHooks` adds what a Kedro project would otherwise wrap in
kedro-mlflow catalog entries, without making the catalog depend on the extra:

- every saved table named ``*_history`` (one row per logged step, a ``step`` column):
  each numeric column becomes a step metric ``<dataset>/<column>`` (the training curves);
- every saved JSON document of the ``reporting`` layer (``retrieval_metrics``,
  ``evaluation_metrics``, …): each number becomes a metric ``<dataset>/<key.path>``, each
  string a tag;
- every saved dataset of the ``reporting`` layer (metrics files, figures, the evaluation
  report folder): its saved version, as artifacts under ``<dataset>/``.

MLflow names may not contain ``@``: ``R@1`` is logged as ``R_at_1``. Without MLflow, or
when no run is active (tracking disabled for the pipeline), the hooks do nothing, and a
tracking error is logged as a warning instead of failing the run.
"""

from __future__ import annotations

import logging
import math
import re
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from kedro.framework.hooks import hook_impl
from kedro.io import AbstractVersionedDataset

from wavy_pipeline.models.device import rank

logger = logging.getLogger(__name__)

REPORTING_LAYER = "reporting"
HISTORY_SUFFIX = "_history"
_BATCH = 1000  # MLflow's limit of metrics per log_batch call
_INVALID = re.compile(r"[^/\w.\- :]")


def metric_name(*parts: str) -> str:
    """An MLflow-valid metric name: ``@`` → ``_at_``, other invalid characters → ``_``."""
    return "/".join(_INVALID.sub("_", str(p).replace("@", "_at_")) for p in parts if p != "")


def flatten_numbers(document: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted.key.path, leaf)`` for every leaf of nested dicts and lists."""
    if isinstance(document, Mapping):
        for key, value in document.items():
            yield from flatten_numbers(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(document, list | tuple):
        for index, value in enumerate(document):
            yield from flatten_numbers(value, f"{prefix}.{index}" if prefix else str(index))
    else:
        yield prefix, document


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def history_metrics(name: str, table: pd.DataFrame) -> list[tuple[str, float, int]]:
    """``(metric, value, step)`` for every finite number of a training-history table."""
    steps = table["step"] if "step" in table else pd.Series(range(len(table)), index=table.index)
    out = []
    for column in table.columns:
        if column == "step" or not pd.api.types.is_numeric_dtype(table[column]):
            continue
        if pd.api.types.is_bool_dtype(table[column]):
            continue
        key = metric_name(name, column)
        for step, value in zip(steps, table[column], strict=True):
            if pd.notna(value) and math.isfinite(value):
                out.append((key, float(value), int(step)))
    return out


def _layer(dataset: Any) -> str | None:
    metadata = getattr(dataset, "metadata", None) or {}
    return (metadata.get("kedro-viz") or {}).get("layer")


def _saved_path(dataset: Any) -> Path | None:
    """Where a (versioned) local dataset has just been saved."""
    if not isinstance(dataset, AbstractVersionedDataset):
        return None
    version = dataset.resolve_save_version()
    return Path(dataset._get_versioned_path(version) if version else dataset._filepath)


def _active_run_id() -> str | None:
    """The active MLflow run, without importing MLflow when nothing else has; only the main
    process of a multi-process run (``accelerate launch``) logs."""
    mlflow = sys.modules.get("mlflow")
    if mlflow is None or rank() != 0:
        return None
    run = mlflow.active_run()
    return run.info.run_id if run else None


class TrackingHooks:
    """Logs training curves, metrics and reports to the active MLflow run (see module)."""

    def __init__(self) -> None:
        self._catalog = None

    @hook_impl
    def after_catalog_created(self, catalog) -> None:
        self._catalog = catalog

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any) -> None:
        run_id = _active_run_id()
        if run_id is None:
            return
        try:
            self._log(run_id, dataset_name, data)
        except Exception as error:  # tracking must never cost a run its results
            logger.warning("MLflow tracking of '%s' failed: %s", dataset_name, error)

    def _log(self, run_id: str, name: str, data: Any) -> None:
        from mlflow.entities import Metric  # noqa: PLC0415 - the extra is optional
        from mlflow.tracking import MlflowClient  # noqa: PLC0415

        client = MlflowClient()
        dataset = self._catalog.get(name) if self._catalog is not None else None
        while hasattr(dataset, "_dataset"):  # a wrapper (hooks.MainProcessDataset)
            dataset = dataset._dataset
        now = int(time.time() * 1000)
        metrics: list[tuple[str, float, int]] = []
        if name.endswith(HISTORY_SUFFIX) and isinstance(data, pd.DataFrame):
            metrics = history_metrics(name, data)
        elif _layer(dataset) == REPORTING_LAYER and isinstance(data, Mapping):
            for key, value in flatten_numbers(data):
                if _is_number(value):
                    metrics.append((metric_name(name, key), float(value), 0))
                elif isinstance(value, str):
                    client.set_tag(run_id, metric_name(name, key), value[:5000])
        for start in range(0, len(metrics), _BATCH):
            batch = [Metric(k, v, now, s) for k, v, s in metrics[start : start + _BATCH]]
            client.log_batch(run_id, metrics=batch, synchronous=True)
        path = _saved_path(dataset) if _layer(dataset) == REPORTING_LAYER else None
        if path is not None:
            if path.is_dir():
                client.log_artifacts(run_id, str(path), artifact_path=name)
            elif path.is_file():
                client.log_artifact(run_id, str(path), artifact_path=name)
        if metrics:
            logger.info("Logged %d MLflow metric values from '%s'", len(metrics), name)
