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
