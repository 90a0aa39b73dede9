"""Training-curve figure from :func:`wavy_pipeline.models.train.fit` history rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from matplotlib.figure import Figure

_ROW_KEYS = {"step", "epoch", "loss", "lr"}


def plot_training_history(history: Sequence[Mapping[str, float]]) -> Figure:
    """Loss (left) and eval metrics (right) against the optimisation step.

    Rows without metrics are periodic train-loss logs (mean over the log window); rows
    with metrics are evaluations, whose ``loss`` is the epoch's mean train loss. Built on
    a bare :class:`~matplotlib.figure.Figure` (Agg canvas, no pyplot state, no display).
    """
    train_rows = [r for r in history if set(r) <= _ROW_KEYS]
    eval_rows = [r for r in history if not set(r) <= _ROW_KEYS]
    metrics = [k for k in dict.fromkeys(k for r in eval_rows for k in r) if k not in _ROW_KEYS]

    fig = Figure(figsize=(11, 4), layout="constrained")
    ax_loss, ax_eval = fig.subplots(1, 2)
    if train_rows:
        ax_loss.plot(
            [r["step"] for r in train_rows],
            [r["loss"] for r in train_rows],
            label="train loss (log window)",
        )
    if eval_rows:
        ax_loss.plot(
            [r["step"] for r in eval_rows],
            [r["loss"] for r in eval_rows],
            "o",
            label="train loss (epoch mean)",
        )
    ax_loss.set(xlabel="step", ylabel="loss", title="Training loss")
    for name in metrics:
        rows = [r for r in eval_rows if name in r]
        ax_eval.plot([r["step"] for r in rows], [r[name] for r in rows], "o-", label=name)
    ax_eval.set(xlabel="step", ylabel="metric", title="Evaluation")
    for ax in (ax_loss, ax_eval):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    return fig
