"""The evaluation report a person opens: image grids, score charts, a markdown summary."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from wavy_pipeline.core.images import ImageCollection

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
        keys = [k for k in ATTRIBUTE_LABELS if k in accuracy["speech"]]
        for offset, condition in ((-0.2, "speech"), (0.2, "text")):
            values = [
                float("nan") if accuracy[condition][k] is None else accuracy[condition][k]
                for k in keys
            ]
            axes[1].bar([i + offset for i in range(len(keys))], values, width=0.4, label=condition)
        axes[1].set_xticks(range(len(keys)), [ATTRIBUTE_LABELS[k] for k in keys])
        axes[1].set_ylim(0, 1.05)
        axes[1].set_title("stated attributes read back by the judge", fontsize=9)
        axes[1].legend(fontsize=8)
    figure.tight_layout()
    return figure


ATTRIBUTE_LABELS = {"color": "colour", "shape": "shape", "size": "size", "position": "position"}


def _figure(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def group_rows(
    groups: Mapping[str, Mapping[str, Any]],
    retrieval: Mapping[str, Mapping[str, Any]] | None,
    label: str,
) -> list[str]:
    """One table row per group (a voice, a phrasing family): n, speech-/text-made CLIP
    score and stated-attribute accuracy, and speech→image R@1 where retrieval has it."""
    attributes = [
        a
        for a in ATTRIBUTE_LABELS
        if any(a in g.get("attribute_accuracy", {}).get("speech", {}) for g in groups.values())
    ]
    retrieval = retrieval or {}
    head = [label, "n", "CLIP speech / text"]
    head += [f"{ATTRIBUTE_LABELS[a]} speech / text" for a in attributes]
    if retrieval:  # retrieval ranks every utterance, images may be made for fewer
        head += ["retrieval n", "speech→image R@1", "attribute R@1"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, entry in groups.items():
        shown = name + (f" ({entry['synthesiser']})" if entry.get("synthesiser") else "")
        cells = [shown, str(entry["n_utterances"])]
        cells.append(f"{entry['clip_score']['speech']:.2f} / {entry['clip_score']['text']:.2f}")
        accuracy = entry.get("attribute_accuracy", {})
        for a in attributes:
            cells.append(
                f"{_figure(accuracy['speech'].get(a))} / {_figure(accuracy['text'].get(a))}"
            )
        if retrieval:
            found = retrieval.get(name, {})
            cells += [
                str(found.get("n", "–")),
                _figure(found.get("speech_to_image_R@1")),
                _figure(found.get("speech_to_image_attribute_R@1")),
            ]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def heldout_lines(metrics: Mapping[str, Any], retrieval: Mapping[str, Any]) -> list[str]:
    """The held-out section: its headline table, per voice, per phrasing, the worst voice
    (``metrics`` is a held-out summary, ``retrieval`` its retrieval metrics)."""
    judge = metrics.get("attribute_accuracy", {}).get("judge_on_corpus_images")
    header = ["| | speech-made | text-made | ground truth |", "|---|---|---|---|"]
    corpus = metrics.get("provenance", {}).get("corpus", {})
    queries = retrieval.get("n_queries", {}).get("speech_to_image", "–")
    lines = [
        f"Corpus `{corpus.get('root')}` (fingerprint {corpus.get('fingerprint')}): images "
        f"made and scored for {metrics['n_utterances']} utterances; retrieval on "
        f"{queries}, speech→image R@1 "
        f"{_figure(retrieval.get('speech_to_image', {}).get('R@1'))} (chance "
        f"{_figure(retrieval.get('chance', {}).get('speech_to_image', {}).get('R@1'))}), "
        f"attribute R@1 {_figure(retrieval.get('speech_to_image_attribute_R@1'))}.",
        "",
        *header,
        *_score_rows(metrics, judge),
    ]
    worst = metrics.get("worst_voice")
    if worst:
        lines += [
            "",
            f"Worst voice: **{worst['name']}**"
            + (f" ({worst['synthesiser']})" if worst.get("synthesiser") else "")
            + f", speech-made colour/shape mean {worst['speech_color_shape_mean']:.3f}.",
        ]
    for key, label, found in (
        ("per_speaker", "voice", retrieval.get("per_speaker")),
        ("per_phrasing", "phrasing", None),
    ):
        if metrics.get(key):
            lines += ["", *group_rows(metrics[key], found, label)]
    return lines


def _score_rows(metrics: Mapping[str, Any], judge: Mapping[str, Any] | None) -> list[str]:
    """Table rows (CLIP score, similarity, judged attributes) of one group of utterances."""
    scores, similarity = metrics["clip_score"], metrics["image_similarity_to_ground_truth"]
    rows = [
        f"| CLIP score | {scores['speech']:.2f} | {scores['text']:.2f} | {scores['ground_truth']:.2f} |",
        f"| similarity to ground truth | {similarity['speech']:.3f} | {similarity['text']:.3f} | 1 |",
    ]
    accuracy = metrics.get("attribute_accuracy")
    if accuracy:
        n = accuracy.get("n_stated", {})
        for key, label in ATTRIBUTE_LABELS.items():
            if key not in accuracy["speech"]:
                continue
            ceiling = f"{judge[key]:.3f}" if judge and key in judge else ""
            said = f", n={n[key]}" if key in n else ""
            rows.append(
                f"| {label} accuracy (judge{said}) | {_figure(accuracy['speech'][key])} "
                f"| {_figure(accuracy['text'][key])} | {ceiling} |"
            )
    rows.append(
        f"| speech/text CLIP-score ratio | **{_figure(metrics['clip_score_ratio_speech_to_text'])}** | | |"
    )
    return rows


SKIPPED_LABELS = {
    "attribute_accuracy": "attribute judge",
    "unseen_voice": "unseen-voice table",
    "heldout": "held-out corpus",
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
            f"run `{run.get('session_id')}` (env {run.get('env') or 'base'}, commit "
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
    heldout = metrics.get("heldout")
    if heldout:
        lines += [
            "",
            "## Held-out corpus",
            "",
            *heldout_lines(heldout, retrieval.get("heldout", {})),
        ]
    elif metrics.get("per_speaker"):
        lines += ["", *group_rows(metrics["per_speaker"], retrieval.get("per_speaker"), "voice")]
    if metrics.get("per_phrasing") and not heldout:
        lines += ["", *group_rows(metrics["per_phrasing"], None, "phrasing")]
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
