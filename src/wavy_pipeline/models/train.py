"""The one training loop of the project, on HF Accelerate.

``fit`` trains any ``nn.Module`` whose loss is ``loss_fn(model, batch) -> scalar``: the
SpeechCLIP projectors, the speech adapter and the four foundation stand-ins (HuBERT-CTC,
CLIP, the diffusion VAE and UNet), each with its step function in its own model file:

* AdamW (weight decay on matrices and embeddings only, nanoGPT-style), the library's linear
  warmup then cosine decay (``transformers.get_cosine_schedule_with_warmup``), optional
  gradient clipping and an optional EMA of the weights (``diffusers`` ``EMAModel``);
* a budget of epochs, of optimizer steps (``max_steps``), or both (whichever ends first);
* batches from ``batches(epoch) -> [[index, …], …]`` (default: a permutation seeded by
  ``(seed, epoch)``, cut into ``batch_size`` slices) assembled by
  ``collate(items, generator)`` (default: stack same-key tensors). A model that needs
  padding, length buckets, augmentation or noise passes its own; ``generator`` is a
  ``torch.Generator`` seeded by ``(seed, epoch, batch, process)``, so every random draw of a
  batch is reproducible and a resumed run draws the same as an uninterrupted one;
* Accelerate handles device placement and autocast (bf16/fp16 on CUDA only);
* one checkpoint file (model, optimizer, scheduler, EMA, loop position, best weights,
  history, RNG states) is written atomically every ``checkpoint_every_steps`` and at each
  epoch end. A later call with the same fingerprint resumes from it and ends with exactly
  the weights of an uninterrupted run (same device, same data);
* early stopping on ``eval_fn(model)[config.monitor]`` (higher is better), restoring the
  best weights at the end (the EMA weights, with an EMA).

One GPU: call ``fit`` (or ``kedro run``). Many GPUs or nodes: start the same program with
``accelerate launch --multi_gpu --num_processes N …``; ``fit`` then trains data-parallel
(DDP through Accelerate's ``prepare``). ``batch_size`` stays the *global* batch: each
process takes its contiguous ``1 / N`` slice of every batch of the same seeded order, DDP
averages the gradients, so a per-sample mean loss gets the single-process gradient; a loss
that needs the whole batch (contrastive negatives) gathers it with :func:`gather_for_loss`.
The main process alone evaluates (the metrics are broadcast, so every process makes the
same early-stopping decision) and writes checkpoints; the others wait for each write. A
checkpoint resumes under any number of processes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import (
    DataLoaderConfiguration,
    InitProcessGroupKwargs,
    broadcast_object_list,
    set_seed,
)
from diffusers.training_utils import EMAModel
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from wavy_pipeline.models.device import PROCESS_GROUP_TIMEOUT

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = 2  # bump when the checkpoint layout changes: old ones are then ignored
MIXED_PRECISIONS = ("no", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
# Config fields that do not change the trajectory, so a checkpoint survives changing them.
_NOT_FINGERPRINTED = ("device", "checkpoint_every_steps", "log_every_steps", "max_steps_this_run")

Batch = dict[str, torch.Tensor]
LossFn = Callable[[nn.Module, Batch], torch.Tensor]
EvalFn = Callable[[nn.Module], Mapping[str, float]]
Batches = Callable[[int], list[list[int]]]  # epoch -> the epoch's batches of item indices
Collate = Callable[[list[Any], torch.Generator], Batch]  # items, seeded generator -> batch
AfterStep = Callable[[nn.Module], None]  # e.g. clamp a parameter after each optimizer step


def refuse_nonfinite(
    values: np.ndarray, rows: np.ndarray, keys: Sequence[str], what: str, chunk: int = 512
) -> None:
    """Raise before the first step if a row of ``values`` holds NaN or Inf, naming its key.

    ``values[rows[i]]`` is the item of ``keys[i]`` (``values`` may be memory-mapped: it is
    read ``chunk`` rows at a time). A non-finite input would otherwise surface as a
    non-finite loss some steps later that names no item.
    """
    bad = []
    for start in range(0, len(rows), chunk):
        block = np.asarray(values[rows[start : start + chunk]])
        finite = np.isfinite(block.reshape(len(block), -1)).all(axis=1)
        bad += [keys[start + i] for i in np.flatnonzero(~finite)]
    if bad:
        shown = ", ".join(bad[:10]) + (f", … ({len(bad) - 10} more)" if len(bad) > 10 else "")
        raise ValueError(
            f"{len(bad)} of {len(rows)} {what} are not finite (NaN or Inf): {shown}. "
            "Training refuses them before the first step; quarantine or fix these inputs "
            "and recompute the features."
        )


def data_digest(*parts: Any) -> str:
    """sha256 of training data for ``fit``'s ``fingerprint_extra``: arrays and tensors (dtype,
    shape, bytes), strings and numbers, in (nested) lists, tuples and dicts. A checkpoint
    made on other data is then not resumed."""
    h = hashlib.sha256()

    def feed(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().contiguous().numpy()
        if isinstance(x, np.ndarray):
            x = np.ascontiguousarray(x)
            h.update(f"a|{x.dtype}|{x.shape}|".encode())
            h.update(x.tobytes())
        elif isinstance(x, Mapping):
            h.update(f"d{len(x)}|".encode())
            for k in sorted(x, key=str):
                feed(str(k))
                feed(x[k])
        elif isinstance(x, list | tuple):
            h.update(f"l{len(x)}|".encode())
            for item in x:
                feed(item)
        else:
            h.update(f"s|{x!r}|".encode())

    for part in parts:
        feed(part)
    return h.hexdigest()


@dataclass
class TrainConfig:
    """Optimisation, schedule, checkpointing and early-stopping settings for :func:`fit`."""

    seed: int = 0
    batch_size: int = 64
    drop_last: bool = True  # contrastive losses want full batches
    lr: float = 1e-4
    weight_decay: float = 0.01
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    warmup_steps: int = 100
    max_epochs: int | None = 10  # None: only max_steps ends training
    max_steps: int | None = None  # optimizer steps; with max_epochs, whichever ends first
    grad_clip: float | None = 1.0  # max global grad norm; None or 0 disables
    ema_decay: float | None = None  # EMA of the weights (diffusers EMAModel); None or 0: off
    mixed_precision: str = "no"  # "no" | "bf16" | "fp16", honoured on CUDA only
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    checkpoint_every_steps: int | None = 500  # None: only at epoch ends
    eval_every_epochs: int = 1  # the last epoch is always evaluated
    monitor: str = "R@1"  # key of eval_fn's result; higher is better
    early_stopping_patience: int | None = None  # evaluations without improvement; None: off
    log_every_steps: int = 50
    max_steps_this_run: int | None = None  # stop (resumably) after this many steps

    def __post_init__(self) -> None:
        if self.mixed_precision not in MIXED_PRECISIONS:
            raise ValueError(f"mixed_precision must be one of {MIXED_PRECISIONS}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}")
        if self.max_epochs is None and self.max_steps is None:
            raise ValueError("set max_epochs, max_steps or both")
        for name in (
            "batch_size",
            "max_epochs",
            "max_steps",
            "eval_every_epochs",
            "log_every_steps",
        ):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        self.adam_betas = tuple(self.adam_betas)  # YAML gives a list


@dataclass
class TrainResult:
    model: nn.Module  # best weights if eval_fn was given (else last), on the training device
    history: list[dict[str, float]]
    best_metric: float | None
    stopped_early: bool
    resumed_from_step: int | None  # None: this call started from scratch
    completed: bool  # False when stopped by max_steps_this_run (call fit again to go on)


@dataclass
class _LoopState:
    """Everything besides model/optimizer/scheduler/RNG that a resumed run needs."""

    step: int = 0
    epoch: int = 0  # completed epochs
    batch_in_epoch: int = 0  # batches done in the current epoch
    history: list[dict[str, float]] = field(default_factory=list)
    best_metric: float | None = None
    best_state: dict[str, torch.Tensor] | None = None
    evals_without_improvement: int = 0
    stopped_early: bool = False
    done: bool = False
    window_loss: float = 0.0  # loss sum since the last log row
    window_steps: int = 0
    epoch_loss: float = 0.0  # loss sum over the current epoch
    epoch_steps: int = 0


def fit_stand_in(  # noqa: PLR0917 - positional like fit
    model: nn.Module,
    loss_fn: LossFn,
    train_dataset: Sequence[Any],
    model_config: Any,
    data: Sequence[Any],
    config: TrainConfig,
    checkpoint_dir: str | os.PathLike | None,
    progress: bool = True,
    *,
    eval_fn: EvalFn | None = None,
    **options: Any,
) -> TrainResult:
    """:func:`fit` as the foundation stand-ins use it: a checkpoint that only resumes for the
    same dataclass ``model_config`` and the same training ``data`` (the parts of
    :func:`data_digest`), the model returned in eval mode. ``options`` go to ``fit``
    (``eval_fn``: none unless given)."""
    result = fit(
        model,
        loss_fn,
        train_dataset,
        eval_fn,
        config,
        checkpoint_dir,
        progress,
        fingerprint_extra={"model": config_identity(model_config), "data": data_digest(*data)},
        **options,
    )
    result.model.eval()
    return result


def fit(  # noqa: PLR0917 - positional signature shared with the callers
    model: nn.Module,
    loss_fn: LossFn,
    train_dataset: Sequence[Any],
    eval_fn: EvalFn | None,
    config: TrainConfig,
    checkpoint_dir: str | os.PathLike | None,
    progress: bool = True,
    *,
    fingerprint_extra: Mapping[str, Any] | None = None,
    batches: Batches | None = None,
    collate: Collate | None = None,
    after_step: AfterStep | None = None,
) -> TrainResult:
    """Train ``model`` on ``train_dataset``, resuming from ``checkpoint_dir`` when possible.

    Args:
        model: freshly initialised module (as a restarted process would build it).
        loss_fn: ``loss_fn(model, batch) -> scalar``; ``batch`` is ``collate``'s output,
            already on the training device; it runs under Accelerate's autocast.
        train_dataset: ``len()`` + ``[i] -> item``; with the default ``collate`` an item is
            a ``dict[str, Tensor]`` of equal shapes per key.
        eval_fn: ``eval_fn(model) -> {metric: float}`` containing ``config.monitor``; called
            in eval mode under ``torch.no_grad``. None disables evaluation/early stopping.
        config: see :class:`TrainConfig`.
        checkpoint_dir: folder for ``checkpoint.pt``; created if missing. None: no
            checkpoints (nothing is written, nothing resumed).
        progress: show a tqdm bar with the running loss.
        fingerprint_extra: JSON-able identity of anything else the run depends on (the
            data, the settings of ``batches`` and ``collate``); a checkpoint is only resumed
            if this matches too.
        batches: ``batches(epoch)`` -> the epoch's global batches as lists of item indices,
            the same number every epoch; a pure function of ``epoch`` (a resumed run asks
            again). Default: the ``(seed, epoch)`` permutation in ``batch_size`` slices.
        collate: ``collate(items, generator) -> dict[str, Tensor]`` on the CPU. Default:
            stack each key. ``generator`` is seeded by ``(seed, epoch, batch, process)``.
        after_step: called with the unwrapped model after every optimizer step.
    """
    accelerator = _make_accelerator(config)
    world, rank, main = (
        accelerator.num_processes,
        accelerator.process_index,
        accelerator.is_main_process,
    )
    if config.batch_size % world:
        raise ValueError(
            f"batch_size {config.batch_size} (the global batch) must be divisible by the "
            f"{world} processes"
        )
    n_items = len(train_dataset)
    batches = batches or _permutation_batches(config, n_items, world)
    collate = collate or _stack
    n_batches = len(batches(0))
    if n_batches == 0:
        raise ValueError(f"{n_items} items give no batch of {config.batch_size}")
    budgets = [config.max_steps, config.max_epochs and n_batches * config.max_epochs]
    total_steps = min(b for b in budgets if b)

    set_seed(config.seed)
    optimizer = _make_optimizer(model, config)
    scheduler = get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, total_steps)
    fingerprint = _fingerprint(model, config, n_items, fingerprint_extra)
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    resumed = _try_resume(
        ckpt_path,
        fingerprint,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        accelerator=accelerator,
    )
    state, ema_state = resumed if resumed is not None else (None, None)
    resumed_from_step = state.step if state is not None else None
    state = state or _LoopState()
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    raw_model = accelerator.unwrap_model(model)
    ema = None
    if config.ema_decay:  # on the training device, after prepare has put the model there
        ema = EMAModel(raw_model.parameters(), decay=config.ema_decay)
        if ema_state is not None:
            ema.load_state_dict(ema_state)
            ema.to(accelerator.device)

    def save() -> None:
        if ckpt_path is None:
            return
        if not main:  # one writer; the others wait until the file is complete
            accelerator.wait_for_everyone()
            return
        _atomic_torch_save(
            {
                "fingerprint": fingerprint,
                "loop": {f.name: getattr(state, f.name) for f in fields(state)},
                "model": raw_model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": accelerator.scaler.state_dict() if accelerator.scaler else None,
                "ema": ema.state_dict() if ema is not None else None,
                "rng": _get_rng_state(),
            },
            ckpt_path,
        )
        accelerator.wait_for_everyone()

    def result(completed: bool) -> TrainResult:
        return TrainResult(
            raw_model,
            state.history,
            state.best_metric,
            state.stopped_early,
            resumed_from_step,
            completed,
        )

    model.train()
    steps_this_run = 0
    bar = tqdm(total=total_steps, initial=state.step, disable=not (progress and main), desc="train")
    with bar:
        while not state.done:
            epoch_batches = batches(state.epoch)
            if len(epoch_batches) != n_batches:
                raise ValueError(
                    f"batches({state.epoch}) gave {len(epoch_batches)} batches, epoch 0 "
                    f"{n_batches}: every epoch must have the same number"
                )
            for b in range(state.batch_in_epoch, n_batches):
                indices = _shard(epoch_batches[b], world, rank)
                generator = _batch_generator(config.seed, state.epoch, b, rank)
                batch = collate([train_dataset[i] for i in indices], generator)
                batch = {k: v.to(accelerator.device) for k, v in batch.items()}
                with accelerator.autocast():
                    loss = loss_fn(model, batch)
                optimizer.zero_grad(set_to_none=True)
                accelerator.backward(loss)
                if config.grad_clip:
                    accelerator.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                scheduler.step()
                if after_step is not None:
                    after_step(raw_model)
                if ema is not None:
                    ema.step(raw_model.parameters())

                loss_value = (
                    accelerator.reduce(loss.detach(), "mean") if world > 1 else loss
                ).item()
                if not math.isfinite(loss_value):
                    raise FloatingPointError(
                        f"non-finite loss {loss_value} at step {state.step + 1}"
                    )
                state.step += 1
                state.batch_in_epoch = b + 1
                state.window_loss += loss_value
                state.window_steps += 1
                state.epoch_loss += loss_value
                state.epoch_steps += 1
                steps_this_run += 1
                bar.update()
                if state.step % config.log_every_steps == 0:
                    loss_mean = state.window_loss / state.window_steps
                    state.history.append(_row(state.step, state.epoch + 1, loss_mean, scheduler))
                    state.window_loss, state.window_steps = 0.0, 0
                    bar.set_postfix(loss=f"{loss_mean:.4f}")
                if state.step == total_steps:
                    break
                if steps_this_run == config.max_steps_this_run:
                    save()
                    logger.info(
                        "Stopped after %d steps this run (step %d of %d); checkpoint in %s",
                        steps_this_run,
                        state.step,
                        total_steps,
                        ckpt_path,
                    )
                    return result(completed=False)
                if (
                    config.checkpoint_every_steps
                    and state.step % config.checkpoint_every_steps == 0
                ):
                    save()

            epoch_done = state.batch_in_epoch == n_batches
            if epoch_done:
                state.epoch += 1
                state.batch_in_epoch = 0
            is_last = state.step == total_steps
            if eval_fn is not None and (
                is_last or (epoch_done and state.epoch % config.eval_every_epochs == 0)
            ):
                _evaluate(  # on the main process; the others get its metrics
                    raw_model,
                    eval_fn,
                    accelerator=accelerator,
                    config=config,
                    state=state,
                    scheduler=scheduler,
                    ema=ema,
                    epoch=state.epoch if epoch_done else state.epoch + 1,
                )
            if epoch_done:
                state.epoch_loss, state.epoch_steps = 0.0, 0
            state.done = is_last or state.stopped_early
            save()

    if state.best_state is not None:
        raw_model.load_state_dict(state.best_state)
        logger.info("Restored best weights (%s=%.4f)", config.monitor, state.best_metric)
    elif ema is not None:
        ema.copy_to(raw_model.parameters())
        logger.info("Final weights: the EMA (decay %s)", config.ema_decay)
    return result(completed=True)


def _make_accelerator(config: TrainConfig) -> Accelerator:
    use_cpu = config.device == "cpu" or (config.device == "auto" and not torch.cuda.is_available())
    if config.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("TrainConfig.device='cuda' but CUDA is not available")
    mixed_precision = config.mixed_precision
    if use_cpu and mixed_precision != "no":
        logger.warning(
            "mixed_precision=%r is only used on CUDA; training in fp32 on CPU", mixed_precision
        )
        mixed_precision = "no"
    # split_batches: config.batch_size is the global batch, so the LR schedule steps once per
    # optimizer step whatever the number of processes (no dataloader is prepared).
    return Accelerator(
        cpu=use_cpu,
        mixed_precision=mixed_precision,
        dataloader_config=DataLoaderConfiguration(split_batches=True),
        kwargs_handlers=[InitProcessGroupKwargs(timeout=PROCESS_GROUP_TIMEOUT)],
    )


def _shard(indices: list[int], world: int, rank: int) -> list[int]:
    """This process's contiguous, equal slice of a global batch (all of it for one process)."""
    if world == 1:
        return indices
    per = len(indices) // world
    if per == 0:
        raise ValueError(f"a batch of {len(indices)} items cannot be shared by {world} processes")
    return indices[rank * per : (rank + 1) * per]


class _GatherForLoss(torch.autograd.Function):
    """All-gather along dim 0 whose backward keeps this process's slice, times the number
    of processes: every process computes the same loss on the gathered batch, DDP then
    averages the P local gradients, which sums the P slices' true gradients."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ctx.world, ctx.rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
        ctx.rows = len(tensor)
        parts = [torch.empty_like(tensor) for _ in range(ctx.world)]
        torch.distributed.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows] * ctx.world


def gather_for_loss(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The global batch of each per-item tensor, for losses over the whole batch (e.g. the
    negatives of InfoNCE) under data-parallel :func:`fit`; the tensors themselves for one
    process. Rows come in process order, which is the single-process batch order, and
    gradients flow back so that DDP's average is the single-process gradient."""
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return tensors
    if torch.distributed.get_world_size() == 1:
        return tensors
    return tuple(_GatherForLoss.apply(t) for t in tensors)


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on >= 2-d tensors only (matrices and embeddings; not biases,
    norms, scales): the project's one weight-decay grouping, nanoGPT's.

    The fused kernel (one pass over all tensors) where torch has one for the parameters'
    device: the per-tensor update loop is a large share of a step of the small trained
    heads on the CPU (in a torch.profiler trace of the demo adapter's step, ~20 of ~120 ms).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return torch.optim.AdamW(
        groups, lr=config.lr, betas=config.adam_betas, eps=config.adam_eps, fused=fused or None
    )


def _stack(items: list[Batch], generator: torch.Generator) -> Batch:
    """The default ``collate``: stack same-key tensors of the items (no randomness)."""
    return {k: torch.stack([item[k] for item in items]) for k in items[0]}


def _permutation_batches(config: TrainConfig, n_items: int, world: int) -> Batches:
    """The default ``batches``: the ``(seed, epoch)`` permutation cut into ``batch_size``
    slices; the last, shorter one is kept unless ``drop_last`` (or it is too small to
    share out among the processes)."""
    size = config.batch_size
    n_batches = n_items // size if config.drop_last else -(-n_items // size)
    if not config.drop_last and world > 1 and 0 < n_items % size < world:
        n_batches = n_items // size

    def batches(epoch: int) -> list[list[int]]:
        order = _epoch_permutation(config.seed, epoch, n_items)
        return [order[b * size : (b + 1) * size] for b in range(n_batches)]

    return batches


def _batch_generator(seed: int, epoch: int, batch: int, rank: int) -> torch.Generator:
    """The generator ``collate`` draws a batch's randomness from: a function of its position
    in training only, so a resumed run draws what an uninterrupted one would."""
    (batch_seed,) = np.random.SeedSequence([seed, epoch, batch, rank]).generate_state(1)
    return torch.Generator().manual_seed(int(batch_seed))


def _epoch_permutation(seed: int, epoch: int, n: int) -> list[int]:
    """Order of the dataset in ``epoch``: a function of ``(seed, epoch)`` only."""
    (epoch_seed,) = np.random.SeedSequence([seed, epoch]).generate_state(1)
    return torch.randperm(n, generator=torch.Generator().manual_seed(int(epoch_seed))).tolist()


def _row(step: int, epoch: int, loss: float, scheduler: Any) -> dict[str, float]:
    """One history row; ``epoch`` is 1-based, ``lr`` the one the next step will use."""
    return {"step": step, "epoch": epoch, "loss": loss, "lr": scheduler.get_last_lr()[0]}


def _evaluate(
    model: nn.Module,
    eval_fn: EvalFn,
    *,
    accelerator: Accelerator,
    config: TrainConfig,
    state: _LoopState,
    scheduler: Any,
    ema: EMAModel | None,
    epoch: int,
) -> None:
    """Run ``eval_fn`` (on the EMA weights, with an EMA), log a history row, track the
    best weights and early stopping. ``epoch``: the 1-based epoch the row reports."""
    metrics = None
    if ema is not None:  # evaluate, and keep as best, the weights training would return
        ema.store(model.parameters())
        ema.copy_to(model.parameters())
    if accelerator.is_main_process:
        model.eval()
        with torch.no_grad(), accelerator.autocast():
            metrics = {k: float(v) for k, v in eval_fn(model).items()}
        model.train()
    if accelerator.num_processes > 1:  # one decision for all: early stopping, best weights
        metrics = broadcast_object_list([metrics])[0]
    if config.monitor not in metrics:
        raise KeyError(f"eval_fn returned {sorted(metrics)}, missing monitor {config.monitor!r}")
    # the row reports the epoch's mean train loss
    loss_mean = state.epoch_loss / max(1, state.epoch_steps)
    state.history.append(_row(state.step, epoch, loss_mean, scheduler) | metrics)
    value = metrics[config.monitor]
    if state.best_metric is None or value > state.best_metric:
        state.best_metric = value
        state.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        state.evals_without_improvement = 0
    else:
        state.evals_without_improvement += 1
    if ema is not None:
        ema.restore(model.parameters())
    logger.info(
        "epoch %d step %d: %s (best %s=%.4f)",
        epoch,
        state.step,
        ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()),
        config.monitor,
        state.best_metric,
    )
    patience = config.early_stopping_patience
    if patience and state.evals_without_improvement >= patience:
        state.stopped_early = True
        logger.info("Early stopping: no %s improvement in %d evaluations", config.monitor, patience)


def config_identity(config: Any) -> Any:
    """``dataclasses.asdict`` for fingerprints, except that a field with
    ``metadata={"fingerprint": "if_set"}`` is left out while it holds its default: a setting
    added to a config after checkpoints were trained without it does not orphan them."""
    if not hasattr(config, "__dataclass_fields__"):
        return config
    out = {}
    for f in fields(config):
        value = getattr(config, f.name)
        if f.metadata.get("fingerprint") == "if_set" and value == f.default:
            continue
        out[f.name] = (
            config_identity(value)
            if hasattr(value, "__dataclass_fields__")
            else _identity_value(value)
        )
    return out


def _identity_value(value: Any) -> Any:
    """What ``asdict`` makes of a non-dataclass field value (containers copied)."""
    if isinstance(value, (list, tuple)):
        return type(value)(config_identity(v) for v in value)
    if isinstance(value, dict):
        return {k: config_identity(v) for k, v in value.items()}
    return value


def _fingerprint(
    model: nn.Module, config: TrainConfig, n_items: int, extra: Mapping[str, Any] | None
) -> str:
    """Hash of what determines the trajectory: config, model identity, data size, extras."""
    model_config = getattr(model, "config", None)
    identity = {
        "format": CHECKPOINT_FORMAT,
        "train": {k: v for k, v in asdict(config).items() if k not in _NOT_FINGERPRINTED},
        "model_class": type(model).__qualname__,
        "model_config": model_config.to_dict() if hasattr(model_config, "to_dict") else None,
        "parameters": [(n, list(p.shape), str(p.dtype)) for n, p in model.state_dict().items()],
        "n_items": n_items,
        "extra": dict(extra or {}),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def _try_resume(
    path: Path | None,
    fingerprint: str,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LambdaLR,
    accelerator: Accelerator,
) -> tuple[_LoopState, dict[str, Any] | None] | None:
    """Load ``path`` into the given objects if it belongs to this run (returning the loop
    state and the EMA's state); else log why not."""
    if path is None:
        return None
    if not path.exists():
        logger.info("Starting fresh: no checkpoint at %s", path)
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file means "start over"
        logger.warning("Starting fresh: cannot read checkpoint %s (%s)", path, exc)
        return None
    if ckpt.get("fingerprint") != fingerprint:
        logger.warning(
            "Starting fresh: checkpoint %s belongs to a different config/model/data "
            "(fingerprint mismatch); it will be overwritten",
            path,
        )
        return None
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    if accelerator.scaler is not None and ckpt["scaler"] is not None:
        accelerator.scaler.load_state_dict(ckpt["scaler"])
    _set_rng_state(ckpt["rng"])
    state = _LoopState(**ckpt["loop"])
    logger.info(
        "Resuming from %s at step %d (epoch %d, batch %d)%s",
        path,
        state.step,
        state.epoch + 1,
        state.batch_in_epoch,
        " - run already finished" if state.done else "",
    )
    return state, ckpt["ema"]


def _get_rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(rng: dict[str, Any]) -> None:
    random.setstate(rng["python"])
    name, keys, *rest = rng["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def _atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a hidden temporary sibling, fsync, then ``os.replace`` into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
