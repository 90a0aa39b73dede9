"""Score generated images: per image (CLIP score against the caption, similarity to the
ground-truth image, the attributes the demo's judge reads), per set (Fréchet distance, KID,
Inception Score), per ranking (R-precision), and a shuffled-caption control.

Every network runs where the one device policy puts it (:func:`~wavy_pipeline.models.
device.prepare_model`: ``evaluation.device`` / ``dtype``), in batches of
``evaluation.batch_size`` through the same batching as the features and generation stages
(:func:`wavy_pipeline.distributed.map_batches`) and the one CLIP encoder
(:mod:`wavy_pipeline.models.clip_encoding`), and each image goes through each network once: the CLIP embeddings serve CLIP score, R-precision and
``fd_clip``; Inception-v3's one pass serves FID, KID and Inception Score.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from wavy_pipeline.core.images import ImageCollection
from wavy_pipeline.data.corpus import STATED_ATTRIBUTES
from wavy_pipeline.distributed import map_batches
from wavy_pipeline.metrics.attribute_judge import AttributeJudge
from wavy_pipeline.metrics.clip_score import clip_score, cosine
from wavy_pipeline.metrics.distribution import (
    INCEPTION_SIZE,
    frechet_distance,
    inception_rows,
    inception_score,
    kernel_distance,
)
from wavy_pipeline.metrics.r_precision import (
    draw_candidates,
    mismatched_captions,
    r_precision_repeated,
)
from wavy_pipeline.models.clip_encoding import clip_image_embeddings, clip_text_embeddings
from wavy_pipeline.models.device import prepare_model

logger = logging.getLogger(__name__)

CONDITIONS = ("speech", "text")
SMALL_SET_NOTE = (
    "Fréchet distances are biased upward on small sets (roughly O(d/n)) and not comparable "
    "across set sizes or feature extractors; KID is unbiased."
)


@dataclass
class Scored:
    """What one scoring pass computed.

    Attributes:
        table: one row per generated image (``image_scores``).
        generated: (N, E) CLIP embeddings of the generated images, rows of ``table``.
        truth: CLIP embedding of each ground-truth image, by image id.
        captions: CLIP text embedding of each distinct caption, by caption.
        inception: Inception-v3 rows (``pool``, ``logits``) of the generated images (rows
            of ``table``) and of the ground truth (by image id), when computed.
        skipped: ``{metric: reason}`` of what could not be computed.
    """

    table: pd.DataFrame
    generated: np.ndarray
    truth: dict[str, np.ndarray]
    captions: dict[str, np.ndarray]
    inception: dict[str, Any] | None = None
    skipped: dict[str, str] = field(default_factory=dict)


def _embed_all(
    items: Sequence,
    embed: Callable[[Sequence], torch.Tensor],
    batch_size: int,
    width: int,
    desc: str,
) -> np.ndarray:
    """``embed`` over ``items`` in batches (shared out over the processes and gathered in
    order, as every stage batches), the (N, width) rows in memory."""
    batches = map_batches(
        len(items), batch_size, lambda start, stop: embed(items[start:stop]), desc=desc, unit="row"
    )
    parts = [rows.numpy() for _, _, rows in batches]
    return np.concatenate(parts) if parts else np.empty((0, width), np.float32)


def inception_features(
    loaders: Sequence[Callable[[], Image.Image]],
    extractor: torch.nn.Module,
    *,
    batch_size: int,
    device: str = "auto",
) -> dict[str, np.ndarray]:
    """Inception-v3 pool features and logits of images, batched like every other stage.
    Images are resized to 299 × 299 with PIL's bicubic filter first (as clean-fid does),
    then fed as uint8; Inception always runs in fp32."""
    target, _ = prepare_model(extractor, device, "fp32")

    def compute(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        pictures = [
            np.asarray(
                load().convert("RGB").resize((INCEPTION_SIZE, INCEPTION_SIZE), Image.BICUBIC)
            )
            for load in loaders[start:stop]
        ]
        batch = torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2).contiguous()
        return inception_rows(extractor, batch.to(target))

    parts = [r for _, _, r in map_batches(len(loaders), batch_size, compute, desc="Inception")]
    return {
        "pool": np.concatenate([p for p, _ in parts]),
        "logits": np.concatenate([logit for _, logit in parts]),
    }


def score_images(
    index: pd.DataFrame,
    generated: ImageCollection,
    ground_truth: Mapping[str, Callable[[], Image.Image]],
    clip_model,
    clip_processor,
    judge: AttributeJudge | None,
    *,
    batch_size: int = 64,
    device: str = "auto",
    dtype: str = "auto",
    inception: torch.nn.Module | None = None,
) -> Scored:
    """One row per generated image (``index``: the collection's index, with the image's
    attributes when judged): CLIP score vs caption, CLIP score of its ground-truth image
    vs the same caption, image–image cosine to the ground truth, judged attributes; and
    the embeddings the set-level metrics need (:class:`Scored`)."""
    index = index.reset_index(drop=True)
    files = index["file"].tolist()
    pictures = {f: partial(generated.image, f) for f in files}
    truth_ids = sorted(index["image_id"].unique())
    texts = sorted(index["caption"].unique())
    prepare_model(clip_model, device, dtype)
    width = clip_model.config.projection_dim

    def embed_images(loaders: Sequence[Callable[[], Image.Image]]) -> torch.Tensor:
        batch = [load().convert("RGB") for load in loaders]
        return clip_image_embeddings(clip_model, clip_processor.image_processor, batch)

    embed_texts = partial(clip_text_embeddings, clip_model, clip_processor.tokenizer)
    gen_emb = _embed_all(
        [pictures[f] for f in files], embed_images, batch_size, width, "CLIP images"
    )
    truth_emb = _embed_all(
        [ground_truth[i] for i in truth_ids], embed_images, batch_size, width, "CLIP images"
    )
    text_emb = _embed_all(texts, embed_texts, batch_size, width, "CLIP text")
    truth = dict(zip(truth_ids, truth_emb, strict=True))
    captions = dict(zip(texts, text_emb, strict=True))
    truth_rows = np.stack([truth[i] for i in index["image_id"]])
    caption_rows = np.stack([captions[c] for c in index["caption"]])
    table = index.assign(
        clip_score=clip_score(gen_emb, caption_rows),
        ground_truth_clip_score=clip_score(truth_rows, caption_rows),
        similarity_to_ground_truth=cosine(gen_emb, truth_rows),
    )
    if judge is not None:
        verdicts = [judge(pictures[f]()) for f in files]
        for attribute in STATED_ATTRIBUTES:
            table[f"judged_{attribute}"] = [v.get(attribute) for v in verdicts]
    rows = None
    if inception is not None:
        made = inception_features(
            [pictures[f] for f in files], inception, batch_size=batch_size, device=device
        )
        real = inception_features(
            [ground_truth[i] for i in truth_ids], inception, batch_size=batch_size, device=device
        )
        rows = {"generated": made, "truth": {"ids": truth_ids, **real}}
    return Scored(table, gen_emb, truth, captions, rows)


def _set_metrics(scored: Scored, features: str, kid_subset_size: int, seed: int) -> dict[str, Any]:
    """Fréchet distance and KID of each condition's images against the distinct ground-truth
    images of the same utterances (each real image once, as the FID protocol has it), in
    the scoring CLIP's or Inception-v3's feature space."""
    table = scored.table
    if features == "inception":
        made = scored.inception["generated"]["pool"]
        real = scored.inception["truth"]["pool"]
    else:
        made = scored.generated
        real = np.stack([scored.truth[i] for i in sorted(scored.truth)])
    n = int((table["condition"] == "speech").sum())
    if min(n, len(real)) < 2:
        raise ValueError(
            f"a set distance needs at least 2 images on each side, got {n} generated per "
            f"condition and {len(real)} ground-truth images"
        )
    fd: dict[str, Any] = {}
    kid: dict[str, Any] = {}
    for condition in CONDITIONS:
        mask = (table["condition"] == condition).to_numpy()
        fd[condition] = frechet_distance(real, made[mask])
        kid[condition] = kernel_distance(real, made[mask], subset_size=kid_subset_size, seed=seed)
    described = {
        "clip": f"image embeddings of the scoring CLIP ({made.shape[1]}-d)",
        "inception": "Inception-v3 pool features (2048-d, torch-fidelity's FID weights)",
    }[features]
    fd |= {"features": described, "n_generated": n, "n_real": len(real), "note": SMALL_SET_NOTE}
    kid = {c: {"mean": kid[c]["mean"], "std": kid[c]["std"]} for c in CONDITIONS} | {
        "features": described,
        "subset_size": kid["speech"]["subset_size"],
        "subsets": kid["speech"]["subsets"],
    }
    return {"fd": fd, "kid": kid}


def _inception_scores(scored: Scored, seed: int, splits: int) -> dict[str, Any]:
    table, rows = scored.table, scored.inception
    result = {}
    for condition in CONDITIONS:
        mask = (table["condition"] == condition).to_numpy()
        result[condition] = inception_score(
            rows["generated"]["logits"][mask], splits=splits, seed=seed
        )
    result["ground_truth"] = inception_score(rows["truth"]["logits"], splits=splits, seed=seed)
    return result


def _rankings(
    scored: Scored, rows: pd.DataFrame, repeats: int, seed: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """R-precision of speech-made, text-made and ground-truth images, and the shuffled-
    caption control (text-made images against another image's caption), on the same
    candidate draws; ``rows``: some of ``scored.table``'s rows."""
    by = {c: rows[rows["condition"] == c].sort_values("utterance_id") for c in CONDITIONS}
    text = by["text"]
    rng = np.random.default_rng(seed)
    image_ids, captions = text["image_id"].tolist(), text["caption"].tolist()
    draws = [draw_candidates(image_ids, captions, rng=rng) for _ in range(repeats)]
    texts = draws[0][1]
    text_emb = np.stack([scored.captions[t] for t in texts])
    embeddings = {c: scored.generated[by[c].index.to_numpy()] for c in CONDITIONS}
    embeddings["ground_truth"] = np.stack([scored.truth[i] for i in image_ids])
    result: dict[str, Any] = {
        name: r_precision_repeated(emb, text_emb, [c for c, _ in draws])
        for name, emb in embeddings.items()
    }
    n = draws[0][0].shape[1]
    result |= {"n_candidates": n, "repeats": repeats, "chance": 1.0 / n}
    # the control: each text-made image scored against a caption of another image; the
    # shuffle permutes the captions, so draws index the same distinct captions (``texts``)
    wrong_images, wrong = mismatched_captions(image_ids, captions, rng=rng)
    wrong_draws = [draw_candidates(wrong_images, wrong, rng=rng)[0] for _ in range(repeats)]
    control = {
        "clip_score": float(
            clip_score(embeddings["text"], np.stack([scored.captions[t] for t in wrong])).mean()
        ),
        "r_precision": r_precision_repeated(embeddings["text"], text_emb, wrong_draws),
        "how": "each text-made image scored against the caption of another test image "
        "(a seeded shuffle); R-precision with that caption as the one to find",
    }
    return result, control


def _summary(table: pd.DataFrame, judged: bool) -> dict[str, Any]:
    by = {c: table[table["condition"] == c] for c in CONDITIONS}
    summary: dict[str, Any] = {
        "clip_score": {c: float(by[c]["clip_score"].mean()) for c in CONDITIONS},
        "n_utterances": int(by["speech"]["utterance_id"].nunique()),
    }
    summary["clip_score"]["ground_truth"] = float(by["text"]["ground_truth_clip_score"].mean())
    summary["clip_score_ratio_speech_to_text"] = (
        summary["clip_score"]["speech"] / summary["clip_score"]["text"]
        if summary["clip_score"]["text"]
        else None
    )
    summary["image_similarity_to_ground_truth"] = {
        c: float(by[c]["similarity_to_ground_truth"].mean()) for c in CONDITIONS
    }
    if judged:
        summary["attribute_accuracy"] = {c: stated_accuracy(by[c]) for c in CONDITIONS}
        summary["attribute_accuracy"]["n_stated"] = stated_counts(by["speech"])
    return summary


def _stated(rows: pd.DataFrame, attribute: str) -> pd.Series:
    """Rows whose caption states ``attribute`` (``stated_<attribute>``; without that column:
    every row) and whose image's true value is known, when the judge reads it at all (an
    image it cannot read, None, counts as wrong)."""
    mask = rows[f"stated_{attribute}"] if f"stated_{attribute}" in rows else True
    known = f"attr_{attribute}" in rows and f"judged_{attribute}" in rows
    mask = mask & (rows[f"attr_{attribute}"].notna() if known else False)
    return pd.Series(mask, index=rows.index, dtype=bool)


def stated_counts(rows: pd.DataFrame) -> dict[str, int]:
    """How many of ``rows`` count for each attribute's accuracy (:func:`stated_accuracy`)."""
    return {a: int(_stated(rows, a).sum()) for a in STATED_ATTRIBUTES}


def stated_accuracy(rows: pd.DataFrame) -> dict[str, float | None]:
    """Score only what was said: per attribute (colour, shape, size, position), the fraction
    of the images whose caption states it that the judge reads as stated; None where no
    caption states it (or the corpus does not know it)."""
    accuracy: dict[str, float | None] = {}
    for attribute in STATED_ATTRIBUTES:
        mask = _stated(rows, attribute)
        if not mask.any():
            accuracy[attribute] = None
            continue
        hits = rows.loc[mask, f"judged_{attribute}"] == rows.loc[mask, f"attr_{attribute}"]
        accuracy[attribute] = float(hits.mean())
    return accuracy


def group_summaries(
    table: pd.DataFrame, column: str, judged: bool, describe: Sequence[str] = ()
) -> dict[str, dict[str, Any]]:
    """:func:`_summary`'s figures (CLIP score, stated-attribute accuracy, n) per value of
    ``column`` (a speaker, a phrasing family), with the group's ``describe`` columns'
    values (e.g. the synthesiser of a speaker) when they are one per group."""
    groups = {}
    for value, rows in table.groupby(column, sort=True):
        entry: dict[str, Any] = {}
        for extra in describe:
            if extra in rows and rows[extra].nunique(dropna=True) == 1:
                entry[extra] = str(rows[extra].dropna().iloc[0])
        entry |= _summary(rows, judged)
        entry.pop("image_similarity_to_ground_truth", None)
        groups[str(value)] = entry
    return groups


def worst_group(groups: Mapping[str, Mapping[str, Any]]) -> dict[str, Any] | None:
    """The group whose speech-made images are worst: lowest mean of speech-made colour and
    shape accuracy (the attributes every caption states) where judged, else lowest
    speech-made CLIP score; ties go to the first name."""

    def badness(entry: Mapping[str, Any]) -> float:
        accuracy = entry.get("attribute_accuracy", {}).get("speech")
        if accuracy:
            known = [accuracy[a] for a in ("color", "shape") if accuracy.get(a) is not None]
            if known:
                return float(np.mean(known))
        return float(entry["clip_score"]["speech"])

    if not groups:
        return None
    name = min(sorted(groups), key=lambda g: badness(groups[g]))
    return {"name": name, "speech_color_shape_mean": badness(groups[name]), **groups[name]}


def _skip(skipped: dict[str, str], metric: str, reason: str) -> None:
    skipped[metric] = reason
    logger.warning("%s skipped: %s", metric, reason)


def evaluation_summary(
    scored: Scored,
    clip_model_name: str,
    judge_on_corpus: dict[str, float] | None,
    *,
    features: str = "clip",
    seed: int = 0,
    r_precision_repeats: int = 10,
    kid_subset_size: int = 1000,
    inception_splits: int = 10,
    skipped: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """``evaluation_metrics.json``: overall, then separately for unseen-voice utterances;
    every metric that could not be computed is in ``skipped`` with its reason (logged)."""
    table = scored.table
    skipped = dict(skipped or {}) | scored.skipped
    judged = judge_on_corpus is not None and "judged_color" in table
    metrics = {"clip_model": clip_model_name, **_summary(table, judged)}
    if judged:
        metrics["attribute_accuracy"]["judge_on_corpus_images"] = judge_on_corpus
    if "speaker" in table and table["speaker"].nunique() > 1:
        metrics["per_speaker"] = group_summaries(table, "speaker", judged, ["synthesiser", "voice"])
        metrics["worst_voice"] = worst_group(metrics["per_speaker"])
    if "phrasing" in table and table["phrasing"].notna().any():
        metrics["per_phrasing"] = group_summaries(table, "phrasing", judged)
    unseen = table[table["unseen_voice"]]
    if len(unseen) and len(unseen) == len(table):
        _skip(
            skipped,
            "unseen_voice",
            "every test voice is unseen (none speaks in the train split), so its table "
            "would repeat the overall one",
        )
    elif len(unseen):
        metrics["unseen_voice"] = _summary(unseen, judged)
    inception = features == "inception" and scored.inception is not None
    try:
        sets = _set_metrics(scored, "clip", kid_subset_size, seed)
        metrics["fd_clip"] = sets["fd"]
        if inception:
            inception_sets = _set_metrics(scored, "inception", kid_subset_size, seed)
            metrics["fid"] = inception_sets["fd"]
            metrics["kid"] = inception_sets["kid"]
            metrics["inception_score"] = _inception_scores(scored, seed, inception_splits)
        else:
            metrics["kid"] = sets["kid"]  # in the scoring CLIP's space, as fd_clip
    except ValueError as error:  # too few images for a set distance
        for metric in ("fd_clip", "kid", *(("fid", "inception_score") if inception else ())):
            _skip(skipped, metric, str(error))
    if features != "inception":
        reason = (
            "evaluation.distribution_features is clip: Inception-v3 is not run, "
            "fd_clip and a CLIP-space KID are reported instead"
        )
        for metric in ("fid", "inception_score"):
            _skip(skipped, metric, reason)
    # else, without Inception-v3: the caller put why under fid / inception_score
    groups = [("r_precision", table, metrics)]
    if "unseen_voice" in metrics:
        groups.append(("unseen_voice.r_precision", unseen, metrics["unseen_voice"]))
    for name, rows, target in groups:
        try:
            target["r_precision"], control = _rankings(scored, rows, r_precision_repeats, seed)
        except ValueError as error:  # e.g. every scored caption describes the same image
            _skip(skipped, name, str(error))
            continue
        if target is metrics:
            metrics["shuffled_caption"] = control
    metrics["skipped"] = skipped
    return metrics


def judge_accuracy(
    judge: AttributeJudge, images: Mapping[str, Callable[[], Image.Image]], attributes: pd.DataFrame
) -> dict[str, float]:
    """Accuracy of the judge on the corpus's own images (attributes known), per attribute
    the corpus records (colour and shape always; size and position where known)."""
    verdicts = [judge(images[i]()) for i in attributes["image_id"]]
    accuracy = {}
    for attribute in STATED_ATTRIBUTES:
        column = f"attr_{attribute}"
        if column not in attributes and attribute not in ("color", "shape"):
            continue
        accuracy[attribute] = float(
            np.mean(
                [v.get(attribute) == a for v, a in zip(verdicts, attributes[column], strict=True)]
            )
        )
    return accuracy | {"n_images": len(attributes)}
