"""Unit tests of the scoring glue (``evaluate``): stated-attribute accuracy, the summary of
a set of scored images, per-group tables and the worst group, the keys of
``evaluation_metrics.json`` and the judge's accuracy on the corpus's own images.

No Kedro and no network: the scored table and its embeddings are written out by hand, and
every expected figure is computed in a comment beside it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from wavy_pipeline.evaluation import scoring as evaluate

# --------------------------------------------------------------------------------------
# Stated attributes
# --------------------------------------------------------------------------------------


def stated_rows() -> pd.DataFrame:
    """Three speech-made images. No ``stated_shape`` column: every caption counts for shape."""
    return pd.DataFrame(
        {
            "attr_color": ["red", "blue", "green"],
            "judged_color": ["red", None, "green"],  # u2 unreadable: wrong
            "stated_color": [True, True, True],
            "attr_shape": ["circle", "square", "circle"],
            "judged_shape": ["square", "square", "circle"],
            "attr_size": ["small", None, "large"],  # u2's size is not known
            "judged_size": ["small", "large", "small"],
            "stated_size": [True, True, True],
            "attr_position": ["left", "right", "top"],
            "judged_position": ["left", "left", "left"],
            "stated_position": [True, False, True],  # u2's caption names no position
        }
    )


def test_stated_accuracy_scores_only_what_each_caption_says():
    rows = stated_rows()
    # colour: u1 ✓, u2 None ✗, u3 ✓ → 2/3; shape (every row): ✗ ✓ ✓ → 2/3
    # size: u2 unknown, left out: u1 ✓, u3 ✗ → 1/2
    # position: u2 not stated, left out (it would be ✗: 1/3): u1 ✓, u3 ✗ → 1/2
    assert evaluate.stated_accuracy(rows) == pytest.approx(
        {"color": 2 / 3, "shape": 2 / 3, "size": 0.5, "position": 0.5}
    )
    assert evaluate.stated_counts(rows) == {"color": 3, "shape": 3, "size": 2, "position": 2}


def test_an_attribute_nobody_states_or_nobody_judges_has_no_figure():
    rows = stated_rows()
    silent = rows.assign(stated_position=False)
    assert evaluate.stated_accuracy(silent)["position"] is None  # not 0.0
    assert evaluate.stated_counts(silent)["position"] == 0
    unjudged = rows.drop(columns=["judged_size"])  # the judge does not read sizes
    assert evaluate.stated_accuracy(unjudged)["size"] is None
    assert evaluate.stated_counts(unjudged)["size"] == 0
    unknown = rows.drop(columns=["attr_position"])  # the corpus does not record positions
    assert evaluate.stated_accuracy(unknown)["position"] is None
    assert evaluate.stated_accuracy(unknown)["color"] == pytest.approx(2 / 3)


# --------------------------------------------------------------------------------------
# A scored set: 4 utterances of 3 images, a speech- and a text-made image each
# --------------------------------------------------------------------------------------
#
# utterance  image  speaker  unseen  caption embedding     speech-made   text-made   truth
# u1         img_a  s1       no      e1                    e3            e1          e1
# u2         img_a  s1       no      (e1 + e2) / √2        e4            = caption   e1
# u3         img_b  s2       yes     e3                    e1            e3          e3
# u4         img_c  s2       yes     e4                    e2            e4          e4
#
# Per-row figures (as score_images would have put them in the table):
#   speech CLIP score 30, 20, 10, 20 → mean 20; text 32, 30, 28, 26 → mean 29
#   ground-truth CLIP score (text rows) 40, 40, 36, 36 → 38; ratio 20 / 29
#   similarity to ground truth: speech .5, .7, .3, .5 → .5; text .8, .8, .6, .6 → .7
#   unseen (u3, u4): speech 15, text 27, ground truth 36, ratio 15 / 27; similarity .4, .6
# Judge: colour speech ✓ ✗ ✓ None → 1/2, text ✓✓✓✓ → 1; shape speech ✓✓✓✓ → 1,
#   text ✓ ✓ ✓ ✗ → 3/4; no size or position known.
#
# R-precision (own caption strictly above the drawn captions of other images; img_a may
# draw the two captions of b and c, b and c two of the three captions of the others, so
# 3 candidates each):
#   text-made images are their own caption: cos 1 against ≤ 0 → 1.0; ground truth: u1 1,
#   u2 .707, u3 1, u4 1 against 0 → 1.0; speech-made: own caption cos 0 and every draw
#   holds a caption at cos ≥ 0 (u1 e3 draws e3, e4; u3 e1 draws two of e1, (e1+e2)/√2, e4,
#   ...) → 0.0 whatever the draws. Shuffled-caption control: another image's caption is
#   orthogonal to a text-made image → CLIP score 0, R-precision 0.
# --------------------------------------------------------------------------------------

E = np.eye(4)
CAPTIONS = {"c1": E[0], "c2": (E[0] + E[1]) / np.sqrt(2), "c3": E[2], "c4": E[3]}


def scored_set() -> evaluate.Scored:
    base = pd.DataFrame(
        [
            ("u1", "img_a", "c1", "s1", "espeak", False, "red", "circle"),
            ("u2", "img_a", "c2", "s1", "espeak", False, "red", "circle"),
            ("u3", "img_b", "c3", "s2", "flite", True, "blue", "square"),
            ("u4", "img_c", "c4", "s2", "flite", True, "green", "circle"),
        ],
        columns=["utterance_id", "image_id", "caption", "speaker", "synthesiser"]
        + ["unseen_voice", "attr_color", "attr_shape"],
    )
    speech = base.assign(
        condition="speech",
        clip_score=[30.0, 20.0, 10.0, 20.0],
        ground_truth_clip_score=[40.0, 40.0, 36.0, 36.0],
        similarity_to_ground_truth=[0.5, 0.7, 0.3, 0.5],
        judged_color=["red", "blue", "blue", None],
        judged_shape=["circle", "circle", "square", "circle"],
    )
    text = base.assign(
        condition="text",
        clip_score=[32.0, 30.0, 28.0, 26.0],
        ground_truth_clip_score=[40.0, 40.0, 36.0, 36.0],
        similarity_to_ground_truth=[0.8, 0.8, 0.6, 0.6],
        judged_color=["red", "red", "blue", "green"],
        judged_shape=["circle", "circle", "square", "square"],
    )
    table = pd.concat([speech, text], ignore_index=True)
    generated = np.stack([E[2], E[3], E[0], E[1], *CAPTIONS.values()])  # rows of the table
    truth = {"img_a": E[0], "img_b": E[2], "img_c": E[3]}
    return evaluate.Scored(table, generated, truth, dict(CAPTIONS))


def test_summary_of_a_scored_set():
    table = scored_set().table
    summary = evaluate._summary(table, judged=True)
    assert summary["n_utterances"] == 4
    assert summary["clip_score"] == pytest.approx(
        {"speech": 20.0, "text": 29.0, "ground_truth": 38.0}
    )
    assert summary["clip_score_ratio_speech_to_text"] == pytest.approx(20 / 29)
    assert summary["image_similarity_to_ground_truth"] == pytest.approx(
        {"speech": 0.5, "text": 0.7}
    )
    accuracy = summary["attribute_accuracy"]
    assert accuracy["speech"] == {"color": 0.5, "shape": 1.0, "size": None, "position": None}
    assert accuracy["text"] == {"color": 1.0, "shape": 0.75, "size": None, "position": None}
    assert accuracy["n_stated"] == {"color": 4, "shape": 4, "size": 0, "position": 0}
    assert "attribute_accuracy" not in evaluate._summary(table, judged=False)


def test_a_text_made_clip_score_of_zero_gives_no_ratio():
    table = scored_set().table
    table.loc[table["condition"] == "text", "clip_score"] = 0.0
    assert evaluate._summary(table, judged=False)["clip_score_ratio_speech_to_text"] is None


def test_group_summaries_per_speaker():
    groups = evaluate.group_summaries(scored_set().table, "speaker", True, ["synthesiser", "x"])
    assert list(groups) == ["s1", "s2"]
    s1, s2 = groups["s1"], groups["s2"]
    assert s1["synthesiser"] == "espeak" and s2["synthesiser"] == "flite"
    assert "x" not in s1  # a describe column the table does not have
    assert "image_similarity_to_ground_truth" not in s1  # per group: scores and accuracy
    assert s1["n_utterances"] == 2 and s2["n_utterances"] == 2
    # s1 = u1, u2: speech (30 + 20) / 2, text (32 + 30) / 2, truth 40
    assert s1["clip_score"] == pytest.approx({"speech": 25.0, "text": 31.0, "ground_truth": 40.0})
    assert s1["clip_score_ratio_speech_to_text"] == pytest.approx(25 / 31)
    # s2 = u3, u4: speech colour ✓ None → 1/2; text shape ✓ ✗ → 1/2
    assert s2["attribute_accuracy"]["speech"]["color"] == 0.5
    assert s2["attribute_accuracy"]["text"]["shape"] == 0.5
    assert s1["attribute_accuracy"]["speech"]["color"] == 0.5  # u1 ✓, u2 ✗
    # one synthesiser per speaker is named; two in a group are not
    mixed = scored_set().table.assign(synthesiser=["a", "b", "c", "c"] * 2)
    by_speaker = evaluate.group_summaries(mixed, "speaker", False, ["synthesiser"])
    assert "synthesiser" not in by_speaker["s1"] and by_speaker["s2"]["synthesiser"] == "c"
    assert "attribute_accuracy" not in by_speaker["s1"]


def accuracy_of(color, shape) -> dict:
    return {"attribute_accuracy": {"speech": {"color": color, "shape": shape, "size": 0.0}}}


def test_worst_group_is_the_lowest_speech_colour_and_shape_mean():
    groups = {
        "b": accuracy_of(0.5, 0.9) | {"clip_score": {"speech": 1.0}},  # mean 0.7
        "a": accuracy_of(0.8, 0.8) | {"clip_score": {"speech": 0.0}},  # 0.8 (size 0 ignored)
        "c": accuracy_of(None, 0.6) | {"clip_score": {"speech": 99.0}},  # shape only: 0.6
    }
    worst = evaluate.worst_group(groups)
    assert worst["name"] == "c"
    assert worst["speech_color_shape_mean"] == pytest.approx(0.6)
    assert worst["clip_score"] == {"speech": 99.0}  # the group's own entry comes along
    del groups["c"]
    assert evaluate.worst_group(groups)["name"] == "b"
    # a tie goes to the first name in order, not in the mapping's order
    tie = {"z": accuracy_of(0.5, 0.5), "y": accuracy_of(0.25, 0.75)}
    assert evaluate.worst_group(tie)["name"] == "y"
    # nothing judged (colour and shape None): the lowest speech-made CLIP score
    unjudged = {
        "p": accuracy_of(None, None) | {"clip_score": {"speech": 21.5}},
        "q": {"clip_score": {"speech": 20.5}},
    }
    worst = evaluate.worst_group(unjudged)
    assert worst["name"] == "q" and worst["speech_color_shape_mean"] == 20.5
    assert evaluate.worst_group({}) is None


# --------------------------------------------------------------------------------------
# evaluation_metrics.json
# --------------------------------------------------------------------------------------

JUDGE_ON_CORPUS = {"color": 1.0, "shape": 0.9, "n_images": 3}


def test_evaluation_summary_has_the_keys_other_tools_read():
    metrics = evaluate.evaluation_summary(
        scored_set(), "tiny-clip", JUDGE_ON_CORPUS, r_precision_repeats=3
    )
    # DESIGN.md, "What other tools read": keys kept stable
    assert metrics["clip_model"] == "tiny-clip"
    assert set(metrics["clip_score"]) == {"speech", "text", "ground_truth"}
    assert "clip_score_ratio_speech_to_text" in metrics
    assert set(metrics["image_similarity_to_ground_truth"]) == {"speech", "text"}
    accuracy = metrics["attribute_accuracy"]
    assert {"color", "shape", "size", "position"} <= set(accuracy["speech"])
    assert {"color", "shape", "size", "position"} <= set(accuracy["text"])
    assert accuracy["judge_on_corpus_images"] == JUDGE_ON_CORPUS
    unseen = metrics["unseen_voice"]
    assert {"clip_score", "clip_score_ratio_speech_to_text", "attribute_accuracy"} <= set(unseen)
    assert {"fd_clip", "kid", "r_precision"} <= set(metrics)

    # ... and their figures, from the worked example
    assert metrics["clip_score"] == pytest.approx(
        {"speech": 20.0, "text": 29.0, "ground_truth": 38.0}
    )
    assert unseen["n_utterances"] == 2
    assert unseen["clip_score"] == pytest.approx(
        {"speech": 15.0, "text": 27.0, "ground_truth": 36.0}
    )
    assert unseen["clip_score_ratio_speech_to_text"] == pytest.approx(15 / 27)
    assert unseen["image_similarity_to_ground_truth"] == pytest.approx({"speech": 0.4, "text": 0.6})
    assert unseen["attribute_accuracy"]["speech"]["color"] == 0.5  # u3 ✓, u4 None
    assert list(metrics["per_speaker"]) == ["s1", "s2"]
    assert metrics["per_speaker"]["s2"]["synthesiser"] == "flite"
    # s1 and s2 both have speech colour 1/2, shape 1 → mean 0.75: the tie goes to s1
    assert metrics["worst_voice"]["name"] == "s1"
    assert metrics["worst_voice"]["speech_color_shape_mean"] == pytest.approx(0.75)
    assert "per_phrasing" not in metrics  # no phrasing column

    rank = metrics["r_precision"]
    assert rank["n_candidates"] == 3 and rank["repeats"] == 3
    assert rank["chance"] == pytest.approx(1 / 3)
    assert rank["speech"] == {"mean": 0.0, "std": 0.0}
    assert rank["text"] == {"mean": 1.0, "std": 0.0}
    assert rank["ground_truth"] == {"mean": 1.0, "std": 0.0}
    control = metrics["shuffled_caption"]
    assert control["clip_score"] == pytest.approx(0.0, abs=1e-9)
    assert control["r_precision"] == {"mean": 0.0, "std": 0.0}
    # the unseen voices' own ranking: u3 and u4, each with the other's caption only
    assert unseen["r_precision"]["n_candidates"] == 2

    # set distances: 4 made per condition against the 3 distinct ground-truth images
    assert metrics["fd_clip"]["n_generated"] == 4 and metrics["fd_clip"]["n_real"] == 3
    assert "4-d" in metrics["fd_clip"]["features"]
    assert metrics["kid"]["subset_size"] == 3  # min(1000, 3 real, 4 made)
    assert set(metrics["skipped"]) == {"fid", "inception_score"}
    assert "distribution_features is clip" in metrics["skipped"]["fid"]


def test_evaluation_summary_without_a_judge_or_unseen_voices():
    scored = scored_set()
    scored.table["unseen_voice"] = False
    metrics = evaluate.evaluation_summary(
        scored, "tiny-clip", None, r_precision_repeats=2, skipped={"attribute_accuracy": "why"}
    )
    assert "attribute_accuracy" not in metrics
    assert "unseen_voice" not in metrics
    assert "unseen_voice" not in metrics["skipped"]  # nothing unseen is not a skip
    assert metrics["skipped"]["attribute_accuracy"] == "why"  # the caller's reasons kept
    # the worst voice falls back on the lowest speech-made CLIP score: s2 (15 < 25)
    assert metrics["worst_voice"]["name"] == "s2"
    assert metrics["worst_voice"]["speech_color_shape_mean"] == pytest.approx(15.0)


def test_every_voice_unseen_is_a_skip_with_its_reason():
    scored = scored_set()
    scored.table["unseen_voice"] = True
    metrics = evaluate.evaluation_summary(scored, "tiny-clip", JUDGE_ON_CORPUS)
    assert "unseen_voice" not in metrics
    assert "every test voice is unseen" in metrics["skipped"]["unseen_voice"]


def test_one_utterance_is_too_few_for_set_distances_and_rankings():
    scored = scored_set()
    keep = (scored.table["utterance_id"] == "u1").to_numpy()
    one = evaluate.Scored(
        scored.table[keep].reset_index(drop=True),
        scored.generated[keep],
        {"img_a": scored.truth["img_a"]},
        {"c1": CAPTIONS["c1"]},
    )
    metrics = evaluate.evaluation_summary(one, "tiny-clip", None)
    assert metrics["clip_score"] == pytest.approx(
        {"speech": 30.0, "text": 32.0, "ground_truth": 40.0}
    )
    assert "fd_clip" not in metrics and "kid" not in metrics and "r_precision" not in metrics
    assert "at least 2 images" in metrics["skipped"]["fd_clip"]
    assert "at least 2 images" in metrics["skipped"]["kid"]
    assert "no mismatching caption" in metrics["skipped"]["r_precision"]


# --------------------------------------------------------------------------------------
# The judge on the corpus's own images
# --------------------------------------------------------------------------------------


def test_judge_accuracy_on_a_small_table():
    # what the judge reads in each picture (the "pictures" are their names here)
    verdicts = {
        "p1": {"color": "red", "shape": "circle", "size": "small"},
        "p2": {"color": "red", "shape": "square", "size": "small"},
        "p3": {"color": None, "shape": "circle", "size": "large"},
        "p4": {"color": "blue", "shape": "circle"},  # no size read
    }
    images = {f"img_{i}": (lambda i=i: f"p{i}") for i in range(1, 5)}
    attributes = pd.DataFrame(
        {
            "image_id": ["img_1", "img_2", "img_3", "img_4"],
            "attr_color": ["red", "blue", "green", "blue"],
            "attr_shape": ["circle", "square", "circle", "square"],
            "attr_size": ["small", "small", "large", "large"],
        }
    )
    accuracy = evaluate.judge_accuracy(verdicts.__getitem__, images, attributes)
    # colour ✓ ✗ ✗(None) ✓ → 1/2; shape ✓ ✓ ✓ ✗ → 3/4; size ✓ ✓ ✓ ✗(unread) → 3/4;
    # position: the corpus does not record it → not reported
    assert accuracy == {"color": 0.5, "shape": 0.75, "size": 0.75, "n_images": 4}
