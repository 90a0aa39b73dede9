import pytest

from wavy_pipeline.metrics.asr import (
    character_error_rate,
    edit_distance,
    normalise_transcript,
    word_error_rate,
)


@pytest.mark.parametrize(
    ("ref", "hyp", "expected"),
    [
        ("kitten", "sitting", 3),  # k->s, e->i, +g
        ("", "abc", 3),
        ("abc", "", 3),
        ("abc", "abc", 0),
        ("flaw", "lawn", 2),  # -f, +n
        (["the", "red", "circle"], ["a", "red", "circle"], 1),
    ],
)
def test_edit_distance_hand_examples(ref, hyp, expected):
    assert edit_distance(ref, hyp) == expected
    assert edit_distance(hyp, ref) == expected


def test_cer_hand_checked():
    # "red circle" (10 chars) vs "rad circl": e->a substitution + deleted final e = 2 / 10
    assert character_error_rate(["red circle"], ["rad circl"]) == pytest.approx(0.2)
    # corpus level: (2 + 0) / (10 + 6) -- not the mean of per-utterance rates
    assert character_error_rate(["red circle", "a blue"], ["rad circl", "a blue"]) == pytest.approx(
        2 / 16
    )
    # the space is a character: "redcircle" misses one
    assert character_error_rate(["red circle"], ["redcircle"]) == pytest.approx(0.1)
    # insertions can push the rate above 1
    assert character_error_rate(["ab"], ["xxxxab"]) == pytest.approx(2.0)


def test_wer_hand_checked():
    # 6 reference words; "small" -> "smell" substitution, "the" deleted
    refs = ["a small red circle", "the square"]
    hyps = ["a smell red circle", "square"]
    assert word_error_rate(refs, hyps) == pytest.approx(2 / 6)


def test_normalisation_case_punctuation_spaces():
    assert normalise_transcript("  A RED  Circle . ") == "a red circle"
    assert normalise_transcript("it's") == "it's"
    assert character_error_rate(["a red circle ."], ["A RED CIRCLE"]) == 0.0
    assert character_error_rate(["a red"], ["A RED"], normalise=False) == pytest.approx(4 / 5)


def test_errors():
    with pytest.raises(ValueError, match="hypotheses"):
        character_error_rate(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="empty"):
        character_error_rate([""], ["x"])
