"""Several processes (one per GPU, started by ``accelerate launch``) sharing inference work.

Feature extraction and generation are a sequence of batches whose results are written in
order. :func:`map_batches` gives each process every P-th batch of exactly the batches a
single process would make, runs them, and gathers the results in batch order onto every
process, so every process sees the same stream as a single-process run: same batches
(same padding), same values, same order. Only the main process writes it (see
:mod:`wavy_pipeline.hooks`); the others still iterate it, because the gathers are
collectives that every process must enter.

One process (plain ``python`` / ``kedro run``, or ``accelerate launch`` with one process):
nothing here touches ``torch.distributed`` or even creates Accelerate's state; the
functions are pass-throughs. Training is data-parallel through Accelerate's ``prepare``
in :mod:`wavy_pipeline.models.train`, which shares this process group.

No Kedro here: this is plain library code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

from accelerate import PartialState
from accelerate.utils import broadcast_object_list, gather_object
from tqdm.auto import tqdm

from wavy_pipeline.models.device import process_state

T = TypeVar("T")


def state() -> PartialState | None:
    """Accelerate's process state (initialises the process group on first use) when several
    processes were launched; None for a single process. How many were launched is read in
    :mod:`wavy_pipeline.models.device` only."""
    return process_state()


def num_processes() -> int:
    current = state()
    return current.num_processes if current else 1


def process_index() -> int:
    current = state()
    return current.process_index if current else 0


def is_main_process() -> bool:
    return process_index() == 0


def wait_for_everyone() -> None:
    """Barrier across processes; nothing for a single process."""
    current = state()
    if current:
        current.wait_for_everyone()


def broadcast(obj: T, from_process: int = 0) -> T:
    """``obj`` as the process ``from_process`` has it (pickled); itself for one process."""
    if num_processes() == 1:
        return obj
    return broadcast_object_list([obj], from_process=from_process)[0]


def map_batches(
    n: int,
    batch_size: int,
    compute: Callable[[int, int], T],
    *,
    desc: str | None = None,
    unit: str = "batch",
) -> Iterator[tuple[int, int, T]]:
    """Yield ``(start, stop, compute(start, stop))`` for the batches ``[0, b), [b, 2b), …``
    of ``range(n)``, in order, whatever the number of processes.

    With P processes the batches go round-robin (batch i to process i mod P); each round of
    P batches is computed in parallel and gathered onto every process (pickled, so results
    may be arrays, images or rows). The batches are those of a single process, so a
    computation that depends on batch composition (padding to the longest item) gives the
    same values. Every process must iterate to the end: each round is a collective.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    spans = [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
    size, rank = num_processes(), process_index()
    with tqdm(total=n, desc=desc, unit=unit, disable=rank != 0) as bar:
        for first in range(0, len(spans), size):
            group = spans[first : first + size]
            if size == 1:
                results = [compute(*group[0])]
            else:  # a process without a batch in the last round still joins the gather
                mine = compute(*group[rank]) if rank < len(group) else None
                results = gather_object([mine])
            for (start, stop), result in zip(group, results, strict=False):
                yield start, stop, result
                bar.update(stop - start)
