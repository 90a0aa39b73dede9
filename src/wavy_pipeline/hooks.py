"""Project hooks: ``kedro run`` under ``accelerate launch`` (one process per GPU).

Every process runs the same nodes in the same order (``SequentialRunner``, the default):
sharded nodes (features, generation) split their batches and gather the results, training
nodes train data-parallel. The catalog stays in charge of storage through one rule:

* only the main process (rank 0) writes a dataset; on the other processes a persisted
  output's save runs the node's lazy stream to the end (its gathers are collectives that
  every process must join) and writes nothing;
* after every save all processes wait for each other, so a later node loads, on every
  process, what rank 0 has just written, through the ordinary catalog entry;
* one run is one version: rank 0's session id (Kedro's save version) is broadcast and
  logged by every process; the other processes never save, so no version of theirs exists.

A single process (plain ``kedro run``) is untouched: every hook returns at once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro.io import AbstractDataset, MemoryDataset

from wavy_pipeline.models import device

logger = logging.getLogger(__name__)


def _launched() -> bool:
    # The environment, not Accelerate: a single-process run imports no torch here.
    return device.launched()


def _distributed() -> Any:
    from wavy_pipeline import distributed  # noqa: PLC0415 - torch only for multi-process runs

    return distributed


def drain(data: Any) -> None:
    """Run a node's lazy output to the end without keeping it: what a non-main process does
    instead of saving. ``ArrayStream`` blocks and iterators (the generation stream) are
    consumed; other outputs (tables, models, re-iterable streams such as the audio stage's,
    which hold no collective) are left alone."""
    from wavy_pipeline.core.arrays import ArrayStream  # noqa: PLC0415 - see _distributed

    if isinstance(data, ArrayStream):
        data = data.blocks
    if isinstance(data, Iterator):
        for _ in data:
            pass


class MainProcessDataset(AbstractDataset):
    """Wraps a persisted dataset for a multi-process run: rank 0 saves, the others drain;
    then every process waits, so loads anywhere see the saved data. Loads delegate."""

    def __init__(self, dataset: AbstractDataset) -> None:
        self._dataset = dataset
        self.metadata = getattr(dataset, "metadata", None)

    def load(self) -> Any:
        return self._dataset.load()

    def save(self, data: Any) -> None:
        distributed = _distributed()
        if distributed.is_main_process():
            self._dataset.save(data)
        else:
            drain(data)
        distributed.wait_for_everyone()
        cache = getattr(self._dataset, "_version_cache", None)
        if cache is not None:  # resolve the load version afresh: rank 0 has just written it
            cache.clear()

    def _exists(self) -> bool:
        return self._dataset.exists()

    def _release(self) -> None:
        self._dataset.release()

    def _describe(self) -> dict[str, Any]:
        return {"dataset": str(self._dataset), "main_process_saves": True}


class DistributedHooks:
    """Makes one Kedro run of N processes behave as one run (see the module docstring)."""

    run_version: str | None = None  # rank 0's save version, on every process

    @hook_impl
    def after_catalog_created(self, catalog: Any, save_version: str) -> None:
        if not _launched():
            return
        distributed = _distributed()
        self.run_version = distributed.broadcast(save_version)
        rank, size = distributed.process_index(), distributed.num_processes()
        logger.warning(
            "Process %d of %d of run %s%s",
            rank,
            size,
            self.run_version,
            ""
            if rank == 0
            else f" (its own session id {save_version} is not used: only process 0 writes)",
        )
        if rank != 0:  # one log of the run, from process 0
            for name in ("kedro", "wavy_pipeline"):
                logging.getLogger(name).setLevel(logging.WARNING)

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        if not _launched():
            return
        distributed = _distributed()
        runner = str(run_params.get("runner"))
        if runner != "None" and "SequentialRunner" not in runner:
            raise RuntimeError(
                f"Under accelerate launch every process must run the nodes in the same "
                f"order: use the default SequentialRunner, not {runner}"
            )
        nodes = [node.name for node in pipeline.nodes]
        if distributed.broadcast(nodes) != nodes:
            raise RuntimeError("the processes of this run were given different pipelines")
        replaced = []
        for name in sorted(pipeline.all_outputs()):
            dataset = catalog.get(name)
            if dataset is None or isinstance(dataset, MemoryDataset | MainProcessDataset):
                continue  # in-memory outputs stay on every process
            wrapped = MainProcessDataset(dataset)
            if isinstance(getattr(catalog, "_datasets", None), dict):
                catalog._datasets[name] = wrapped  # keeps its validators; no "Replacing" log
            else:
                catalog[name] = wrapped
            replaced.append(name)
        logger.info("Main process writes; others wait for each save: %s", ", ".join(replaced))

    @hook_impl
    def after_pipeline_run(self) -> None:
        if _launched():
            _distributed().wait_for_everyone()
