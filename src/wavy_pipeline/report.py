"""The evaluation report a person opens: image grids, score charts, a markdown summary."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from wavy_pipeline.datasets.images import ImageCollection

UNSEEN = "#c0392b"


def pick_examples(table: pd.DataFrame, n: int) -> pd.DataFrame:
    """Up to ``n`` utterances of different images for the grid, half from unseen voices
    when there are any."""
    speech = table[table["condition"] == "speech"].sort_values("utterance_id")
    speech = speech.drop_duplicates(["image_id", "unseen_voice"])
    unseen = speech[speech["unseen_voice"]].head(n // 2)
    seen = speech[~speech["unseen_voice"]].head(n - len(unseen))
    return pd.concat([seen, unseen])


def image_grid(
    examples: pd.DataFrame,
    table: pd.DataFrame,
    generated: ImageCollection,
    ground_truth: Mapping[str, Callable[[], Image.Image]],
) -> Figure:
    """Rows: caption | ground truth | text-made | speech-made; unseen voices in red."""
    files = table.set_index(["utterance_id", "condition"])["file"]
    figure = Figure(figsize=(8.5, 1.7 * len(examples) + 0.4))
    axes = figure.subplots(len(examples), 4, squeeze=False)
    for ax, title in zip(
        axes[0], ("caption (speaker)", "ground truth", "from text", "from speech"), strict=True
    ):
        ax.set_title(title, fontsize=10)
    for row, example in zip(axes, examples.itertuples(), strict=True):
        colour = UNSEEN if example.unseen_voice else "black"
        tag = "\nunseen voice" if example.unseen_voice else ""
        row[0].text(
            0.0,
            0.5,
            f"{example.caption}\n({example.speaker}){tag}",
            color=colour,
            fontsize=9,
            va="center",
            wrap=True,
        )
        pictures = (
            ground_truth[example.image_id](),
            generated.image(files[(example.utterance_id, "text")]),
            generated.image(files[(example.utterance_id, "speech")]),
        )
        for ax, picture in zip(row[1:], pictures, strict=True):
            ax.imshow(picture)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(ax is not row[0])
    figure.tight_layout()
    return figure


def score_charts(metrics: Mapping[str, Any], table: pd.DataFrame) -> Figure:
    """CLIP score (speech, text, ground truth), attribute accuracy, CLIP score by speaker."""
    judged = "attribute_accuracy" in metrics
    figure = Figure(figsize=(12 if judged else 8, 3.6))
    axes = figure.subplots(1, 3 if judged else 2)
    scores = metrics["clip_score"]
    axes[0].bar(list(scores), list(scores.values()), color=["#2e86c1", "#7f8c8d", "#27ae60"])
    axes[0].set_title(f"CLIP score ({metrics['clip_model']})", fontsize=9)
    for i, value in enumerate(scores.values()):
        axes[0].text(i, value, f"{value:.1f}", ha="center", va="bottom", fontsize=8)
    speech = table[table["condition"] == "speech"]
    by_speaker = speech.groupby("speaker")["clip_score"].mean()
    unseen = set(speech.loc[speech["unseen_voice"], "speaker"])
    colours = [UNSEEN if s in unseen else "#2e86c1" for s in by_speaker.index]
    axes[-1].bar(by_speaker.index, by_speaker.values, color=colours)
    axes[-1].axhline(metrics["clip_score"]["text"], color="#7f8c8d", ls="--", label="text-made")
    axes[-1].set_title("speech-made CLIP score by speaker (red: unseen)", fontsize=9)
    axes[-1].legend(fontsize=8)
    axes[-1].tick_params(axis="x", labelrotation=45, labelsize=8)
    if judged:
        accuracy = metrics["attribute_accuracy"]
        labels = ["colour", "shape"]
        for offset, condition in ((-0.2, "speech"), (0.2, "text")):
            values = [accuracy[condition]["color"], accuracy[condition]["shape"]]
            axes[1].bar([i + offset for i in range(2)], values, width=0.4, label=condition)
        axes[1].set_xticks(range(2), labels)
        axes[1].set_ylim(0, 1.05)
        axes[1].set_title("attributes read back by the judge", fontsize=9)
        axes[1].legend(fontsize=8)
    figure.tight_layout()
    return figure


def _score_rows(metrics: Mapping[str, Any], judge: Mapping[str, Any] | None) -> list[str]:
    """Table rows (CLIP score, similarity, judged attributes) of one group of utterances."""
    scores, similarity = metrics["clip_score"], metrics["image_similarity_to_ground_truth"]
    rows = [
        f"| CLIP score | {scores['speech']:.2f} | {scores['text']:.2f} | {scores['ground_truth']:.2f} |",
        f"| similarity to ground truth | {similarity['speech']:.3f} | {similarity['text']:.3f} | 1 |",
    ]
    accuracy = metrics.get("attribute_accuracy")
    if accuracy:
        for key, label in (("color", "colour"), ("shape", "shape")):
            ceiling = f"{judge[key]:.3f}" if judge else ""
            rows.append(
                f"| {label} accuracy (judge) | {accuracy['speech'][key]:.3f} "
                f"| {accuracy['text'][key]:.3f} | {ceiling} |"
            )
    rows.append(
        f"| speech/text CLIP-score ratio | **{metrics['clip_score_ratio_speech_to_text']:.3f}** | | |"
    )
    return rows


SKIPPED_LABELS = {
    "attribute_accuracy": "attribute judge",
    "unseen_voice": "unseen-voice table",
    "fid": "FID",
    "inception_score": "Inception Score",
    "r_precision": "R-precision",
}


def _mean_std(value: Mapping[str, Any] | None, digits: int = 3) -> str:
    if not value:
        return ""
    std = value.get("std")
    shown = std is not None and abs(std) >= 10**-digits
    return f"{value['mean']:.{digits}f}" + (f" ± {std:.{digits}f}" if shown else "")


def comparable_rows(metrics: Mapping[str, Any]) -> list[str]:
    """The figures the literature reports (R-precision, FD, KID, IS), with the shuffled-
    caption control beside them."""
    lines = [
        "| | speech-made | text-made | ground truth | shuffled caption (control) |",
        "|---|---|---|---|---|",
    ]
    rank, control = metrics.get("r_precision"), metrics.get("shuffled_caption", {})
    if rank:
        lines.append(
            f"| R-precision (1 of {rank['n_candidates']} captions, {rank['repeats']} draws; "
            f"chance {rank['chance']:.3f}) | {_mean_std(rank['speech'])} "
            f"| {_mean_std(rank['text'])} | {_mean_std(rank['ground_truth'])} "
            f"| {_mean_std(control.get('r_precision'))} |"
        )
    if control:
        scores = metrics["clip_score"]
        lines.append(
            f"| CLIP score | {scores['speech']:.2f} | {scores['text']:.2f} "
            f"| {scores['ground_truth']:.2f} | {control['clip_score']:.2f} |"
        )
    for key, label in (("fid", "FID"), ("fd_clip", "FD in CLIP space (fd_clip)")):
        if key in metrics:
            fd = metrics[key]
            lines.append(
                f"| {label}, vs ground truth ({fd['n_generated']} made, {fd['n_real']} real) "
                f"| {fd['speech']:.3f} | {fd['text']:.3f} | 0 | = text-made (sets, not pairs) |"
            )
    if "kid" in metrics:
        kid = metrics["kid"]
        lines.append(
            f"| KID ({kid['features'].split(' (')[0]}; subsets of {kid['subset_size']}) "
            f"| {_mean_std(kid['speech'], 4)} | {_mean_std(kid['text'], 4)} | | |"
        )
    if "inception_score" in metrics:
        score = metrics["inception_score"]
        lines.append(
            f"| Inception Score | {_mean_std(score['speech'], 2)} | {_mean_std(score['text'], 2)} "
            f"| {_mean_std(score['ground_truth'], 2)} | |"
        )
    note = next((metrics[k]["note"] for k in ("fid", "fd_clip") if k in metrics), None)
    if note:
        lines += [
            "",
            f"{note} The shuffled-caption control pairs each text-made image with "
            "another image's caption: pairwise scores fall to it, set distances cannot "
            "see it.",
        ]
    return lines


def skipped_lines(metrics: Mapping[str, Any]) -> list[str]:
    """One line per metric that was not computed, with why."""
    return [
        f"- {SKIPPED_LABELS.get(metric, metric)} skipped: {reason}"
        for metric, reason in (metrics.get("skipped") or {}).items()
    ]


def provenance_lines(metrics: Mapping[str, Any], retrieval: Mapping[str, Any]) -> list[str]:
    """Corpus, run and dataset versions of the evaluation and of the retrieval figures."""
    lines: list[str] = []
    for title, document in (("evaluation", metrics), ("retrieval", retrieval)):
        provenance = document.get("provenance")
        if not provenance:
            lines.append(f"- {title}: no provenance recorded")
            continue
        corpus, run = provenance.get("corpus", {}), provenance.get("run", {})
        versions = ", ".join(
            f"`{name}` {version}" for name, version in provenance.get("datasets", {}).items()
        )
        lines.append(
            f"- {title}: corpus `{corpus.get('root')}` (fingerprint `{corpus.get('fingerprint')}`), "
            f"run `{run.get('session_id')}` (env {run.get('env')}, commit "
            f"{run.get('git_commit') or 'unknown'}); from {versions}"
        )
    return lines


def markdown(metrics: Mapping[str, Any], retrieval: Mapping[str, Any]) -> str:
    """The report's text: headline figures (all test utterances, then the voice never heard
    in training), then both metrics files verbatim."""
    judge = metrics.get("attribute_accuracy", {}).get("judge_on_corpus_images")
    header = ["| | speech-made | text-made | ground truth |", "|---|---|---|---|"]
    lines = [
        "# Wavy: images from speech — evaluation report",
        "",
        f"Scored by CLIP model `{metrics['clip_model']}` on {metrics['n_utterances']} test utterances.",
        "",
        *header,
        *_score_rows(metrics, judge),
    ]
    unseen = metrics.get("unseen_voice")
    if unseen:
        lines += [
            "",
            f"Voices never heard in training ({unseen['n_utterances']} of the utterances; "
            "red in the grid):",
            "",
            *header,
            *_score_rows(unseen, judge),
        ]
    lines += ["", "## Figures comparable with the literature", "", *comparable_rows(metrics)]
    skipped = skipped_lines(metrics)
    if skipped:
        lines += ["", "## Not computed", "", *skipped]
    lines += ["", "## Provenance", "", *provenance_lines(metrics, retrieval)]
    lines += [
        "",
        "![examples](grid.png)",
        "",
        "![scores](scores.png)",
        "",
        "## evaluation_metrics.json",
        "```json",
        json.dumps(metrics, indent=2),
        "```",
        "## retrieval_metrics.json",
        "```json",
        json.dumps(retrieval, indent=2),
        "```",
    ]
    return "\n".join(lines) + "\n"
