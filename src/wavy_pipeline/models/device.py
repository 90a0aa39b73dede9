"""The one device, dtype and process policy of the project (``device: auto`` in parameters).

Every stage asks here: which device and dtype a frozen model runs in (:func:`prepare_model`),
how many processes a launcher started and which one this is (:func:`world_size`,
:func:`rank`, read from the launcher's environment and nowhere else), and Accelerate's
process state when there are several (:func:`process_state`). Reading the world size or
rank imports nothing heavy (torch only where a device or dtype is asked for), so the Kedro
hooks and settings ask it at start-up of every ``kedro`` command.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from accelerate import PartialState

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}  # names of torch dtypes
# How long a process may wait for the others at a collective: process 0 alone writes each
# dataset (and fsyncs it) while the others wait, which can outlast NCCL's 10-minute default.
PROCESS_GROUP_TIMEOUT = timedelta(hours=2)


def world_size() -> int:
    """Number of processes a launcher (``accelerate launch``, ``torchrun``) started: 1 for a
    plain ``python`` / ``kedro run``."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's global rank among :func:`world_size` processes (0 for one process)."""
    return int(os.environ.get("RANK", "0"))


def launched() -> bool:
    """True in a process started by a multi-process launcher (``WORLD_SIZE`` > 1)."""
    return world_size() > 1


def process_state() -> PartialState | None:
    """Accelerate's state of this process when a launcher started several (``WORLD_SIZE``
    > 1), creating the process group on first use: NCCL with one GPU per process, gloo on
    CPU (no GPU, or ``ACCELERATE_USE_CPU=1``). None for a single process, which never
    touches ``torch.distributed``."""
    if not launched():
        return None
    import torch  # noqa: PLC0415 - see the module docstring
    from accelerate import PartialState  # noqa: PLC0415

    use_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    return PartialState(cpu=use_cpu or not torch.cuda.is_available(), timeout=PROCESS_GROUP_TIMEOUT)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → CUDA when present, else CPU; ``cuda`` without a GPU is a clear error.

    In a process started by ``accelerate launch`` with several processes, ``auto`` and
    ``cuda`` mean this process's own GPU (``cuda:<local rank>``), and ``auto`` means CPU
    under ``ACCELERATE_USE_CPU=1``: Accelerate's process state decides, as for training.
    """
    import torch  # noqa: PLC0415 - see the module docstring

    state = process_state() if name in ("auto", "cuda") else None
    if state is not None and (state.device.type == "cuda" or name == "auto"):
        return state.device
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but no CUDA GPU is visible")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """Inference dtype: ``auto`` → bf16 on CUDA GPUs that support it, fp16 on older ones,
    fp32 on CPU (half precision is slow or unsupported there, so it is never used)."""
    import torch  # noqa: PLC0415 - see the module docstring

    if device.type != "cuda":
        return torch.float32
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if name not in DTYPES:
        raise ValueError(f"dtype must be auto, fp32, fp16 or bf16, got {name!r}")
    return getattr(torch, DTYPES[name])


def prepare_model(
    model: torch.nn.Module, device: str = "auto", dtype: str = "auto"
) -> tuple[torch.device, torch.dtype]:
    """Put a frozen model where this policy says, for inference: on the resolved device,
    in the resolved dtype, in eval mode, without gradients. Every stage that runs a frozen
    model (features, generation's text side, evaluation's scoring CLIP) goes through here."""
    target = resolve_device(device)
    precision = resolve_dtype(dtype, target)
    model.to(target, dtype=precision).eval().requires_grad_(False)
    return target, precision
