"""Speech-recognition metrics: edit distance, character and word error rates.

Pure Python (no dependencies); the strings in this project are short, so the O(n*m)
dynamic programme is plenty fast.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_NON_TEXT = re.compile(r"[^a-z0-9' ]+")
_SPACES = re.compile(r"\s+")


def normalise_transcript(text: str) -> str:
    """Lower-case, turn everything except ``a-z 0-9 '`` into spaces, collapse whitespace.

    Makes upper-case CTC outputs (e.g. ``facebook/hubert-large-ls960-ft``: ``"A RED CIRCLE"``)
    comparable with lower-case captions that may carry punctuation (``"a red circle ."``).
    """
    text = _NON_TEXT.sub(" ", text.lower())
    return _SPACES.sub(" ", text).strip()


def edit_distance(reference: Sequence, hypothesis: Sequence) -> int:
    """Levenshtein distance (substitutions, insertions and deletions all cost 1)."""
    if len(reference) < len(hypothesis):
        reference, hypothesis = hypothesis, reference
    previous = list(range(len(hypothesis) + 1))
    for i, ref_item in enumerate(reference, start=1):
        current = [i]
        for j, hyp_item in enumerate(hypothesis, start=1):
            current.append(
                min(
                    previous[j] + 1,  # deletion
                    current[j - 1] + 1,  # insertion
                    previous[j - 1] + (ref_item != hyp_item),  # substitution / match
                )
            )
        previous = current
    return previous[-1]


def _error_rate(
    references: Sequence[str], hypotheses: Sequence[str], *, words: bool, normalise: bool
) -> float:
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    errors = 0
    total = 0
    for raw_ref, raw_hyp in zip(references, hypotheses, strict=True):
        ref = normalise_transcript(raw_ref) if normalise else raw_ref
        hyp = normalise_transcript(raw_hyp) if normalise else raw_hyp
        ref_units = ref.split() if words else ref
        hyp_units = hyp.split() if words else hyp
        errors += edit_distance(ref_units, hyp_units)
        total += len(ref_units)
    if total == 0:
        raise ValueError("references are empty")
    return errors / total


def character_error_rate(
    references: Sequence[str], hypotheses: Sequence[str], *, normalise: bool = True
) -> float:
    """Corpus-level CER: total character edit distance / total reference characters.

    Spaces count as characters. With ``normalise`` (default) both sides go through
    :func:`normalise_transcript` first. Can exceed 1 when hypotheses are much longer.
    """
    return _error_rate(references, hypotheses, words=False, normalise=normalise)


def word_error_rate(
    references: Sequence[str], hypotheses: Sequence[str], *, normalise: bool = True
) -> float:
    """Corpus-level WER: total word edit distance / total reference words."""
    return _error_rate(references, hypotheses, words=True, normalise=normalise)
