"""Unit tests of the evaluation report (``report``): which examples the grid shows, the
grid's size, the markdown tables and their rounding, and what a missing block says.

No Kedro, no models: metrics documents are written out by hand (the shape
``evaluation_summary`` gives them) and every expected cell is spelt out.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from wavy_pipeline.evaluation import report

# --------------------------------------------------------------------------------------
# The grid: which utterances, and the figure
# --------------------------------------------------------------------------------------


def scored_table() -> pd.DataFrame:
    """Speech- and text-made rows of 7 utterances, in no particular order."""
    utterances = pd.DataFrame(
        {
            "utterance_id": ["u6", "u2", "u4", "u1", "u7", "u5", "u3"],
            "image_id": ["img_d", "img_a", "img_c", "img_a", "img_d", "img_a", "img_b"],
            "unseen_voice": [True, False, False, False, True, True, False],
            "caption": [f"caption {u}" for u in ["u6", "u2", "u4", "u1", "u7", "u5", "u3"]],
            "speaker": ["s9", "s1", "s2", "s1", "s9", "s9", "s2"],
        }
    )
    rows = [utterances.assign(condition=c) for c in ("text", "speech")]
    table = pd.concat(rows, ignore_index=True)
    return table.assign(file=table["utterance_id"] + "." + table["condition"] + ".png")


def picked(table: pd.DataFrame, n: int) -> list[str]:
    return report.pick_examples(table, n)["utterance_id"].tolist()


def test_pick_examples_takes_half_from_unseen_voices_one_per_image():
    table = scored_table()
    # speech rows by id: seen u1 (a), u2 (a: same image as u1, dropped), u3 (b), u4 (c);
    # unseen u5 (a), u6 (d), u7 (d: dropped)
    assert picked(table, 4) == ["u1", "u3", "u5", "u6"]  # 2 unseen, 2 seen
    assert picked(table, 5) == ["u1", "u3", "u4", "u5", "u6"]  # n // 2 = 2 unseen
    assert picked(table, 3) == ["u1", "u3", "u5"]
    assert set(report.pick_examples(table, 4)["condition"]) == {"speech"}
    # more asked than there are: every distinct one, seen first
    assert picked(table, 10) == ["u1", "u3", "u4", "u5", "u6"]


def test_pick_examples_fills_up_with_seen_voices():
    table = scored_table()
    no_unseen = table.assign(unseen_voice=False)
    # u1, u2, u5 share img_a; u6, u7 img_d: one utterance per image
    assert picked(no_unseen, 4) == ["u1", "u3", "u4", "u6"]
    one_unseen = table[~table["utterance_id"].isin(["u5", "u7"])]  # only u6 unseen
    assert picked(one_unseen, 4) == ["u1", "u3", "u4", "u6"]  # 1 unseen, 3 seen


class Collection:
    """An image collection: ``image(file)`` gives the picture saved under ``file``."""

    def __init__(self, pictures: dict[str, Image.Image]) -> None:
        self.pictures = pictures

    def image(self, file: str) -> Image.Image:
        return self.pictures[file]


COLOURS = {"truth": (200, 0, 0), "text": (0, 200, 0), "speech": (0, 0, 200)}


def solid(colour: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (8, 8), colour)


@pytest.mark.parametrize("n", [1, 3])
def test_image_grid_has_one_row_of_four_per_example(n):
    table = scored_table()
    examples = report.pick_examples(table, 4).head(n)
    generated = Collection(
        {f: solid(COLOURS[c]) for f, c in zip(table["file"], table["condition"], strict=True)}
    )
    truth = {i: (lambda: solid(COLOURS["truth"])) for i in table["image_id"].unique()}
    figure = report.image_grid(examples, table, generated, truth)

    # 8.5 in wide, 1.7 in per row + 0.4 in: at 100 dpi, 850 × (170 n + 40) pixels
    assert tuple(figure.get_size_inches()) == pytest.approx((8.5, 1.7 * n + 0.4))
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=100)
    assert Image.open(png).size == (850, 170 * n + 40)

    axes = np.array(figure.axes).reshape(n, 4)
    assert [ax.get_title() for ax in axes[0]] == [
        "caption (speaker)",
        "ground truth",
        "from text",
        "from speech",
    ]
    for row, example in zip(axes, examples.itertuples(), strict=True):
        # caption | ground truth | text-made | speech-made, each its own picture
        shown = [tuple(ax.images[0].get_array()[0, 0]) for ax in row[1:]]
        assert shown == [COLOURS["truth"], COLOURS["text"], COLOURS["speech"]]
        (label,) = row[0].texts
        assert label.get_text().startswith(f"{example.caption}\n({example.speaker})")
        assert ("unseen voice" in label.get_text()) == example.unseen_voice
        assert label.get_color() == (report.UNSEEN if example.unseen_voice else "black")


# --------------------------------------------------------------------------------------
# Markdown tables
# --------------------------------------------------------------------------------------


def group(n: int, speech: float, text: float, accuracy=None, synthesiser=None) -> dict:
    entry = {"n_utterances": n, "clip_score": {"speech": speech, "text": text}}
    if accuracy:
        entry["attribute_accuracy"] = accuracy
    if synthesiser:
        entry["synthesiser"] = synthesiser
    return entry


def test_group_rows_round_and_show_what_each_group_has():
    groups = {
        "fillers": group(
            3,
            21.456,
            30.0,
            {"speech": {"color": 2 / 3, "shape": None}, "text": {"color": 1.0, "shape": 0.5}},
        ),
        "kal": group(2, 9.0, 28.004, {"speech": {"color": None}, "text": {"color": 0.25}}, "flite"),
    }
    rows = report.group_rows(groups, None, "phrasing")
    assert rows == [
        "| phrasing | n | CLIP speech / text | colour speech / text | shape speech / text |",
        "|---|---|---|---|---|",
        "| fillers | 3 | 21.46 / 30.00 | 0.667 / 1.000 | – / 0.500 |",
        "| kal (flite) | 2 | 9.00 / 28.00 | – / 0.250 | – / – |",  # shape: not in kal's
    ]


def test_group_rows_with_retrieval_per_group():
    groups = {"a": group(4, 20.0, 30.0), "b": group(1, 10.0, 30.0)}
    retrieval = {
        "a": {"n": 12, "speech_to_image_R@1": 0.41666, "speech_to_image_attribute_R@1": 0.5}
    }
    rows = report.group_rows(groups, retrieval, "voice")
    assert rows[0] == (
        "| voice | n | CLIP speech / text | retrieval n | speech→image R@1 | attribute R@1 |"
    )
    assert rows[2] == "| a | 4 | 20.00 / 30.00 | 12 | 0.417 | 0.500 |"
    assert rows[3] == "| b | 1 | 10.00 / 30.00 | – | – | – |"  # not in retrieval


def summary_block(n: int = 4) -> dict:
    """An evaluation summary as ``evaluation_summary`` writes one (demo configuration)."""
    return {
        "n_utterances": n,
        "clip_score": {"speech": 20.004, "text": 29.996, "ground_truth": 38.5},
        "clip_score_ratio_speech_to_text": 0.66688,
        "image_similarity_to_ground_truth": {"speech": 0.51234, "text": 0.7},
        "attribute_accuracy": {
            "speech": {"color": 0.5, "shape": 1.0, "size": None, "position": 0.25},
            "text": {"color": 1.0, "shape": 0.75, "size": None, "position": 1 / 3},
            "n_stated": {"color": 4, "shape": 4, "size": 0, "position": 4},
            "judge_on_corpus_images": {"color": 0.9876, "shape": 1.0, "n_images": 18},
        },
    }


SCORE_ROWS = [
    "| CLIP score | 20.00 | 30.00 | 38.50 |",
    "| similarity to ground truth | 0.512 | 0.700 | 1 |",
    "| colour accuracy (judge, n=4) | 0.500 | 1.000 | 0.988 |",
    "| shape accuracy (judge, n=4) | 1.000 | 0.750 | 1.000 |",
    "| size accuracy (judge, n=0) | – | – |  |",  # nobody stated a size; judge: no figure
    "| position accuracy (judge, n=4) | 0.250 | 0.333 |  |",
    "| speech/text CLIP-score ratio | **0.667** | | |",
]


def test_heldout_lines():
    metrics = summary_block(6) | {
        "provenance": {"corpus": {"root": "data/01_raw/heldout", "fingerprint": "ab12"}},
        "worst_voice": {"name": "kal", "synthesiser": "flite", "speech_color_shape_mean": 0.41666},
        "per_speaker": {"kal": group(6, 20.0, 30.0, synthesiser="flite")},
        "per_phrasing": {"fillers": group(6, 20.0, 30.0)},
    }
    retrieval = {
        "n_queries": {"speech_to_image": 108},
        "speech_to_image": {"R@1": 0.08333},
        "chance": {"speech_to_image": {"R@1": 1 / 36}},
        "speech_to_image_attribute_R@1": 0.1,
        "per_speaker": {"kal": {"n": 9, "speech_to_image_R@1": 0.0}},
    }
    lines = report.heldout_lines(metrics, retrieval)
    assert lines[0] == (
        "Corpus `data/01_raw/heldout` (fingerprint ab12): images made and scored for 6 "
        "utterances; retrieval on 108, speech→image R@1 0.083 (chance 0.028), "
        "attribute R@1 0.100."
    )
    assert lines[1:4] == ["", "| | speech-made | text-made | ground truth |", "|---|---|---|---|"]
    assert lines[4:11] == SCORE_ROWS
    assert lines[12] == "Worst voice: **kal** (flite), speech-made colour/shape mean 0.417."
    assert "| kal (flite) | 6 | 20.00 / 30.00 | 9 | 0.000 | – |" in lines  # with retrieval
    assert "| phrasing | n | CLIP speech / text |" in lines  # per phrasing, no retrieval
    assert "| fillers | 6 | 20.00 / 30.00 |" in lines


def test_heldout_lines_without_retrieval_or_provenance_say_so():
    lines = report.heldout_lines(summary_block(), {})
    assert "images made and scored for 4 utterances;" in lines[0]
    assert lines[0].endswith("retrieval on –, speech→image R@1 – (chance –), attribute R@1 –.")
    assert not any(line.startswith("Worst voice") for line in lines)


COMPARABLE = {
    "clip_score": {"speech": 20.0, "text": 29.0, "ground_truth": 38.0},
    "r_precision": {
        "n_candidates": 100,
        "repeats": 10,
        "chance": 0.01,
        "speech": {"mean": 0.12345, "std": 0.0004},  # std below the last digit: not shown
        "text": {"mean": 0.5, "std": 0.0211},
        "ground_truth": {"mean": 0.9, "std": 0.0},
    },
    "shuffled_caption": {"clip_score": 12.3456, "r_precision": {"mean": 0.011, "std": 0.002}},
    "fd_clip": {
        "speech": 1.23456,
        "text": 0.5,
        "n_generated": 90,
        "n_real": 18,
        "note": "Small sets bias FD.",
    },
    "kid": {
        "speech": {"mean": 0.012345, "std": 0.00005},
        "text": {"mean": 0.5, "std": 0.0012},
        "features": "image embeddings of the scoring CLIP (64-d)",
        "subset_size": 18,
    },
}


def test_comparable_rows_round_each_figure_and_show_a_std_only_where_it_counts():
    assert report.comparable_rows(COMPARABLE) == [
        "| | speech-made | text-made | ground truth | shuffled caption (control) |",
        "|---|---|---|---|---|",
        "| R-precision (1 of 100 captions, 10 draws; chance 0.010) | 0.123 | 0.500 ± 0.021 "
        "| 0.900 | 0.011 ± 0.002 |",
        "| CLIP score | 20.00 | 29.00 | 38.00 | 12.35 |",
        "| FD in CLIP space (fd_clip), vs ground truth (90 made, 18 real) | 1.235 | 0.500 "
        "| 0 | = text-made (sets, not pairs) |",
        "| KID (image embeddings of the scoring CLIP; subsets of 18) | 0.0123 "
        "| 0.5000 ± 0.0012 | | |",
        "",
        "Small sets bias FD. The shuffled-caption control pairs each text-made image with "
        "another image's caption: pairwise scores fall to it, set distances cannot see it.",
    ]


def test_comparable_rows_with_inception_features():
    metrics = {
        k: v for k, v in COMPARABLE.items() if k not in ("r_precision", "shuffled_caption")
    } | {
        "fid": {
            "speech": 150.0,
            "text": 120.5,
            "n_generated": 90,
            "n_real": 18,
            "note": "FID note.",
        },
        "inception_score": {
            "speech": {"mean": 3.14159, "std": 0.2},
            "text": {"mean": 2.0, "std": 0.001},  # below 0.01: not shown
            "ground_truth": {"mean": 4.5, "std": 0.05},
        },
    }
    lines = report.comparable_rows(metrics)
    assert lines[2] == (
        "| FID, vs ground truth (90 made, 18 real) | 150.000 | 120.500 | 0 "
        "| = text-made (sets, not pairs) |"
    )
    assert lines[3].startswith("| FD in CLIP space (fd_clip)")
    assert lines[5] == "| Inception Score | 3.14 ± 0.20 | 2.00 | 4.50 ± 0.05 | |"
    assert lines[-1].startswith("FID note. ")  # FID's note first
    assert not any(line.startswith("| R-precision") or "| CLIP score |" in line for line in lines)


def test_comparable_rows_of_nothing_is_the_header_alone():
    assert report.comparable_rows({}) == [
        "| | speech-made | text-made | ground truth | shuffled caption (control) |",
        "|---|---|---|---|---|",
    ]


# --------------------------------------------------------------------------------------
# The whole text
# --------------------------------------------------------------------------------------


def full_metrics() -> dict:
    return (
        {"clip_model": "tiny-clip"}
        | summary_block(4)
        | {
            "unseen_voice": summary_block(2),
            "per_speaker": {"s1": group(2, 25.0, 31.0), "s2": group(2, 15.0, 27.0)},
            "skipped": {"fid": "Inception-v3 is not run", "heldout": "no held-out run yet"},
            "provenance": {
                "corpus": {"root": "data/01_raw/spoken_shapes", "fingerprint": "f00d"},
                "run": {"session_id": "2026-01-02T03.04.05.678Z", "env": None},
                "datasets": {"generated_images": "v1", "speechclip_model": "v0"},
            },
        }
    )


def test_markdown_headline_unseen_voices_and_per_voice_figures():
    metrics = full_metrics()
    retrieval = {"per_speaker": {"s2": {"n": 6, "speech_to_image_R@1": 0.5}}}
    text = report.markdown(metrics, retrieval)
    lines = text.splitlines()
    assert lines[0] == "# Wavy: images from speech — evaluation report"
    assert "Scored by CLIP model `tiny-clip` on 4 test utterances." in lines
    at = lines.index("| | speech-made | text-made | ground truth |")
    assert lines[at + 2 : at + 9] == SCORE_ROWS
    # the unseen voices: their own table, same rows
    unseen = lines.index("Voices never heard in training (2 of the utterances; red in the grid):")
    assert lines[unseen + 4 : unseen + 11] == SCORE_ROWS
    assert "| s2 | 2 | 15.00 / 27.00 | 6 | 0.500 | – |" in lines  # per voice, no held-out
    assert "## Held-out corpus" not in lines
    # what was not computed, by its label, with why
    assert "- FID skipped: Inception-v3 is not run" in lines
    assert "- held-out corpus skipped: no held-out run yet" in lines
    assert (
        "- evaluation: corpus `data/01_raw/spoken_shapes` (fingerprint `f00d`), run "
        "`2026-01-02T03.04.05.678Z` (env base, commit unknown); from `generated_images` v1, "
        "`speechclip_model` v0"
    ) in lines
    assert "- retrieval: no provenance recorded" in lines
    assert "![examples](grid.png)" in lines and "![scores](scores.png)" in lines
    # both files verbatim
    assert "## evaluation_metrics.json\n```json\n" + json.dumps(metrics, indent=2) in text
    assert text.endswith(
        "## retrieval_metrics.json\n```json\n" + json.dumps(retrieval, indent=2) + "\n```\n"
    )


def test_markdown_with_a_heldout_block_shows_it_instead_of_the_per_voice_table():
    metrics = full_metrics() | {
        "heldout": summary_block(6) | {"per_speaker": {"kal": group(6, 1.0, 2.0)}},
        "per_phrasing": {"fillers": group(3, 5.0, 6.0)},
    }
    metrics["skipped"].pop("heldout")
    lines = report.markdown(
        metrics, {"heldout": {"n_queries": {"speech_to_image": 108}}}
    ).splitlines()
    held = lines.index("## Held-out corpus")
    assert "retrieval on 108," in lines[held + 2]
    assert "| kal | 6 | 1.00 / 2.00 |" in lines[held:]
    assert "| s1 | 2 | 25.00 / 31.00 |" not in lines  # the demo's per-voice table gives way
    assert "| fillers | 3 | 5.00 / 6.00 |" not in lines  # so does its per-phrasing table


def test_markdown_of_a_minimal_document_says_what_is_missing():
    metrics = {
        "clip_model": "tiny-clip",
        "n_utterances": 1,
        "clip_score": {"speech": 1.0, "text": 2.0, "ground_truth": 3.0},
        "clip_score_ratio_speech_to_text": 0.5,
        "image_similarity_to_ground_truth": {"speech": 0.1, "text": 0.2},
    }
    lines = report.markdown(metrics, {}).splitlines()
    assert "| speech/text CLIP-score ratio | **0.500** | | |" in lines
    assert not any("accuracy (judge" in line for line in lines)  # no judge: no rows
    assert not any(line.startswith("Voices never heard") for line in lines)
    assert "## Not computed" not in lines  # nothing skipped
    assert "- evaluation: no provenance recorded" in lines
    assert "- retrieval: no provenance recorded" in lines
    comparable = lines.index("## Figures comparable with the literature")
    assert lines[comparable + 2 : comparable + 5] == [
        "| | speech-made | text-made | ground truth | shuffled caption (control) |",
        "|---|---|---|---|---|",
        "",
    ]


def test_markdown_says_a_missing_ratio_instead_of_crashing():
    metrics = {
        "clip_model": "tiny-clip",
        "n_utterances": 1,
        "clip_score": {"speech": 0.0, "text": 0.0, "ground_truth": 3.0},
        "clip_score_ratio_speech_to_text": None,
        "image_similarity_to_ground_truth": {"speech": 0.1, "text": 0.2},
    }
    assert "| speech/text CLIP-score ratio | **–** | | |" in report.markdown(metrics, {})
