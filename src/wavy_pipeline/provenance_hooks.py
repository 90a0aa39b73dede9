"""Kedro's side of :mod:`wavy_pipeline.provenance`: ``run_provenance`` for the nodes.

When a run starts, :class:`ProvenanceHooks` resolves the version of every versioned dataset
of the catalog (this run's save version for what the pipeline writes, the version it will
load for the rest: the latest, or the one ``--load-versions`` pins) and saves that, with
the run's session id, env, pipelines and code version, into the ``run_provenance`` memory
dataset. Nodes that write metrics take it as an input and keep what concerns them.
"""

from __future__ import annotations

import logging
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import kedro
from kedro.framework.hooks import hook_impl
from kedro.io import AbstractVersionedDataset, MemoryDataset
from kedro.io.core import DatasetError

from wavy_pipeline.provenance import namespace_view, run_record

logger = logging.getLogger(__name__)

RUN_PROVENANCE = "run_provenance"


def _git_commit(project_path: str | None) -> str | None:
    if not project_path:
        return None
    try:
        out = subprocess.run(
            ["git", "-C", project_path, "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def _package_version() -> str | None:
    try:
        return version("wavy_pipeline")
    except PackageNotFoundError:
        return None


def dataset_versions(catalog: Any, produced: set[str], save_version: str) -> dict[str, Any]:
    """``{name: version}`` of every versioned dataset (None where no version exists yet).

    A transcoded entry whose sibling the run saves (``speech_encoder@processor`` when it saves
    ``speech_encoder@ctc``) is recorded with this run's version: it reads the same folder."""
    produced = set(produced) | {name.split("@")[0] for name in produced if "@" in name}
    versions: dict[str, Any] = {}
    for name in sorted(catalog.keys()):
        dataset = catalog.get(name)
        while hasattr(dataset, "_dataset"):  # a wrapper (hooks.MainProcessDataset)
            dataset = dataset._dataset
        if not isinstance(dataset, AbstractVersionedDataset) or dataset._version is None:
            continue
        if name in produced or name.split("@")[0] in produced:
            versions[name] = save_version
            continue
        try:
            versions[name] = dataset.resolve_load_version()
        except DatasetError:  # nothing saved yet
            versions[name] = None
    return versions


class ProvenanceHooks:
    """Fills ``run_provenance`` before every run (see the module docstring)."""

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        save_version = run_params.get("run_id")  # Kedro saves every output under it
        versions = dataset_versions(catalog, set(pipeline.all_outputs()), save_version)
        project = run_params.get("project_path")
        code = {
            "kedro": kedro.__version__,
            "wavy_pipeline": _package_version(),
            "git_commit": _git_commit(str(project) if project else None),
            "project_path": str(Path(project).resolve()) if project else None,
        }
        document = run_record(run_params, versions, code)
        _put(catalog, RUN_PROVENANCE, document)
        # a namespaced copy of the DAG (``heldout``) reads ``<namespace>.run_provenance``
        for name in sorted(pipeline.inputs()):
            namespace, _, base = name.rpartition(".")
            if namespace and base == RUN_PROVENANCE:
                _put(catalog, name, namespace_view(document, namespace))


def _put(catalog: Any, name: str, document: dict[str, Any]) -> None:
    existing = catalog.get(name) if name in catalog.keys() else None
    if isinstance(existing, MemoryDataset):
        existing.save(document)
    else:
        catalog[name] = document
