"""Stated-attribute accuracy, the per-voice / per-phrasing tables, the worst voice, and the
provenance rules of the held-out blocks: node-level checks with hand-computed values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from wavy_pipeline.evaluation.report import group_rows
from wavy_pipeline.evaluation.scoring import (
    group_summaries,
    stated_accuracy,
    stated_counts,
    worst_group,
)
from wavy_pipeline.generation.generate import first_utterances
from wavy_pipeline.pipelines.evaluation.nodes import heldout_block
from wavy_pipeline.provenance import models_differ, namespace_view
from wavy_pipeline.speechclip.alignment import _per_group


def _rows() -> pd.DataFrame:
    """Four utterances × (speech, text), two voices, two phrasing families."""
    # one row per utterance; stated_*: does its caption name that attribute (only u3 names
    # a position)
    base = pd.DataFrame(
        [
            ("u1", "flite-kal", "flite", "fillers", "red", "circle", "small", "left"),
            ("u2", "flite-kal", "flite", "synonyms", "blue", "square", "large", "right"),
            ("u3", "fest-ked", "festival", "fillers", "red", "circle", "small", "top"),
            ("u4", "fest-ked", "festival", "synonyms", "green", "circle", "large", "left"),
        ],
        columns=["utterance_id", "speaker", "synthesiser", "phrasing"]
        + [f"attr_{a}" for a in ("color", "shape", "size", "position")],
    ).assign(
        stated_color=True,
        stated_shape=True,
        stated_size=[True, False, True, False],
        stated_position=[False, False, True, False],
    )
    speech = base.assign(
        condition="speech",
        clip_score=[30.0, 20.0, 10.0, 20.0],
        similarity_to_ground_truth=0.5,
        ground_truth_clip_score=40.0,
        judged_color=["red", "red", None, "green"],  # 2 of 4 (unreadable counts as wrong)
        judged_shape=["circle", "square", "square", "circle"],  # 3 of 4
        judged_size=["small", "small", "large", "large"],  # stated: u1 ok, u3 wrong → 1/2
        judged_position=["right", "left", "top", "top"],  # stated: u3 ok → 1/1
    )
    text = base.assign(
        condition="text",
        clip_score=[32.0, 30.0, 28.0, 26.0],
        similarity_to_ground_truth=0.6,
        ground_truth_clip_score=40.0,
        judged_color=base["attr_color"],
        judged_shape=base["attr_shape"],
        judged_size=base["attr_size"],
        judged_position=["left", "left", "left", "left"],  # u3 (top) wrong → 0/1
    )
    return pd.concat([speech, text], ignore_index=True).assign(unseen_voice=True)


def test_attribute_accuracy_counts_only_what_each_caption_states():
    table = _rows()
    speech = table[table["condition"] == "speech"]
    assert stated_accuracy(speech) == {"color": 0.5, "shape": 0.75, "size": 0.5, "position": 1.0}
    assert stated_accuracy(table[table["condition"] == "text"])["position"] == 0.0
    assert stated_counts(speech) == {"color": 4, "shape": 4, "size": 2, "position": 1}
    # nobody states a position: no figure, not a zero
    silent = speech.assign(stated_position=False)
    assert stated_accuracy(silent)["position"] is None
    assert stated_counts(silent)["position"] == 0


def test_per_voice_and_per_phrasing_tables_and_the_worst_voice():
    table = _rows()
    voices = group_summaries(table, "speaker", True, ["synthesiser", "voice"])
    assert list(voices) == ["fest-ked", "flite-kal"]
    ked, kal = voices["fest-ked"], voices["flite-kal"]
    assert ked["synthesiser"] == "festival" and "voice" not in ked
    assert ked["n_utterances"] == 2
    assert ked["clip_score"]["speech"] == pytest.approx(15.0)  # (10 + 20) / 2
    assert ked["clip_score"]["text"] == pytest.approx(27.0)
    # fest-ked speech: colour u3 wrong, u4 right → 0.5; shape u3 wrong, u4 right → 0.5
    assert ked["attribute_accuracy"]["speech"]["color"] == 0.5
    assert ked["attribute_accuracy"]["speech"]["shape"] == 0.5
    assert ked["attribute_accuracy"]["speech"]["size"] == 0.0  # u3 only: large ≠ small
    assert kal["attribute_accuracy"]["speech"] == {
        "color": 0.5,
        "shape": 1.0,
        "size": 1.0,
        "position": None,
    }
    assert kal["attribute_accuracy"]["n_stated"]["position"] == 0
    worst = worst_group(voices)
    assert worst["name"] == "fest-ked" and worst["speech_color_shape_mean"] == 0.5
    phrasings = group_summaries(table, "phrasing", True)
    # fillers = u1, u3: speech colour right, wrong → 0.5; synonyms = u2, u4: wrong, right
    assert phrasings["fillers"]["attribute_accuracy"]["speech"]["color"] == 0.5
    assert phrasings["synonyms"]["attribute_accuracy"]["speech"]["shape"] == 1.0
    assert phrasings["fillers"]["clip_score"]["speech"] == pytest.approx(20.0)


def test_balanced_selection_keeps_every_voice():
    rows = pd.DataFrame(
        {
            "utterance_id": [f"u{i}" for i in range(7)],
            "speaker": ["a", "a", "a", "a", "b", "b", "c"],
        }
    )
    assert first_utterances(rows, 4, "speaker")["utterance_id"].tolist() == ["u0", "u1", "u4", "u6"]
    assert first_utterances(rows, 3, None)["utterance_id"].tolist() == ["u0", "u1", "u2"]
    assert len(first_utterances(rows, None, "speaker")) == 7


def test_worst_voice_without_a_judge_is_the_lowest_speech_made_clip_score():
    groups = {"a": {"clip_score": {"speech": 12.0}}, "b": {"clip_score": {"speech": 9.0}}}
    assert worst_group(groups)["name"] == "b"
    assert worst_group({}) is None


def test_per_speaker_retrieval_is_against_the_whole_gallery():
    utterances = pd.DataFrame(
        {"speaker": ["s1", "s1", "s2"], "synthesiser": ["flite", "flite", "festival"]}
    )
    # 3 queries × 2 images; the right image: 0, 1, 1
    similarity = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.7]])
    relevant = np.array([[True, False], [False, True], [False, True]])
    required = [{"color": "red"}, {"color": "blue"}, {"color": "blue"}]
    gallery = [{"color": "red"}, {"color": "blue"}]
    groups = _per_group(utterances, "speaker", similarity, relevant, required, gallery)
    assert groups == {
        "s1": {
            "n": 2,
            "synthesiser": "flite",
            "speech_to_image_R@1": 0.5,
            "speech_to_image_attribute_R@1": 0.5,
        },
        "s2": {
            "n": 1,
            "synthesiser": "festival",
            "speech_to_image_R@1": 1.0,
            "speech_to_image_attribute_R@1": 1.0,
        },
    }


def test_the_namespace_sees_its_own_datasets_and_the_shared_models():
    run = {
        "run": {"session_id": "s"},
        "datasets": {
            "utterances": "v-demo",
            "heldout.utterances": "v-heldout",
            "speechclip_model": "v-model",
        },
    }
    view = namespace_view(run, "heldout")
    assert view["datasets"] == {"utterances": "v-heldout", "speechclip_model": "v-model"}
    assert view["run"] == {"session_id": "s", "namespace": "heldout"}


def test_heldout_blocks_join_only_figures_of_the_same_models():
    ours = {"datasets": {"speechclip_model": "v2", "speech_adapter": "a1"}}
    same = {"clip_score": {"speech": 1.0}, "provenance": {"datasets": dict(ours["datasets"])}}
    block, reason = heldout_block(same, ours)
    assert block == same and reason is None
    older = {"clip_score": {}, "provenance": {"datasets": {"speechclip_model": "v1"}}}
    block, reason = heldout_block(older, ours)
    assert block is None
    assert "speechclip_model version v1 there, v2 here" in reason
    assert "kedro run --pipelines heldout" in reason
    block, reason = heldout_block(None, ours)
    assert block is None and "no held-out evaluation saved yet" in reason
    # unknown versions (nothing saved yet) are not a difference
    assert (
        models_differ(ours, {"datasets": {"speechclip_model": None}}, ["speechclip_model"]) is None
    )


def test_the_report_shows_each_voice_with_its_synthesiser_and_retrieval():
    voices = group_summaries(_rows(), "speaker", True, ["synthesiser"])
    retrieval = {"fest-ked": {"n": 9, "speech_to_image_R@1": 0.25}}
    rows = group_rows(voices, retrieval, "voice")
    assert rows[0].startswith("| voice | n | CLIP speech / text | colour speech / text |")
    assert rows[2] == (
        "| fest-ked (festival) | 2 | 15.00 / 27.00 | 0.500 / 1.000 | 0.500 / 1.000 "
        "| 0.000 / 1.000 | 1.000 / 0.000 | 9 | 0.250 | – |"
    )
    assert rows[3].startswith("| flite-kal (flite) | 2 |") and "| – / – |" in rows[3]
