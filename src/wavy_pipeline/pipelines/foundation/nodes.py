"""Nodes of the ``foundation`` pipeline: HuBERT-CTC and CLIP stand-ins, trained and scored."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
from PIL import ImageOps

from wavy_pipeline.core.hubert_inputs import HubertInputs
from wavy_pipeline.data.corpus import STATED_ATTRIBUTES, attribute_captions, stated_attributes
from wavy_pipeline.data.images import MIRROR_WORDS
from wavy_pipeline.evaluation.scoring import stated_accuracy
from wavy_pipeline.generation.generate import text_images, utterance_seed
from wavy_pipeline.metrics.asr import character_error_rate, normalise_transcript
from wavy_pipeline.metrics.attribute_judge import AttributeJudge
from wavy_pipeline.metrics.retrieval import pair_preference, recall_at_k
from wavy_pipeline.models.clip_encoding import encode_clip_images, encode_clip_texts
from wavy_pipeline.models.foundation import (
    TinyClipConfig,
    TinyHubertConfig,
    build_clip_bpe_tokenizer,
    build_clip_processor,
    build_clip_tokenizer,
    build_ctc_processor,
    train_clip,
    train_hubert_ctc,
    transcribe,
)
from wavy_pipeline.models.foundation_diffusion import (
    TinyDiffusionConfig,
    finetune_config,
    reconstruct,
    text_encoder_from_clip,
    train_stand_in,
)
from wavy_pipeline.models.train import TrainConfig

logger = logging.getLogger(__name__)


def _split(utterances: pd.DataFrame, name: str, keep=None) -> pd.DataFrame:
    rows = utterances[utterances["split"] == name]
    if keep is None:
        return rows
    return rows[rows["utterance_id"].map(keep.__contains__).astype(bool)]  # also when empty


def _train_speech(
    hubert_inputs: HubertInputs, utterances: pd.DataFrame
) -> tuple[list[np.ndarray], list[str]]:
    train = _split(utterances, "train", hubert_inputs)
    return (
        [hubert_inputs.values(u) for u in train["utterance_id"]],
        [normalise_transcript(c) for c in train["caption"]],
    )


def train_speech_encoder(  # noqa: PLR0913, PLR0917 - a node's inputs
    hubert_inputs: HubertInputs,
    utterances: pd.DataFrame,
    foundation_inputs: HubertInputs,
    foundation_utterances: pd.DataFrame,
    seed: int,
    params: dict[str, Any],
) -> tuple[tuple[Any, Any], pd.DataFrame]:
    """CTC-train the HuBERT stand-in in two or three stages, each resumable from its own
    folder under ``params.checkpoint_dir``:

    1. ``demo``: from scratch on the demo corpus's train split (``params.train``): its seven
       voices get CTC off its plateau, which the many-voiced mix alone does not (CER 0.56);
    2. ``finetune``: from there on the foundation corpus's train split (hundreds of
       espeak-ng/mbrola voices, ``make foundation-corpus``) together with the demo's
       (``params.finetune``), so that it transcribes voices it never heard;
    3. ``robust`` (with ``params.robust``): from there on the same mix, with its own
       augmentation (``robust.augment``, e.g. spectral tilt and band limits) and
       ``robust.train``.

    The vocabulary is the English letters (``build_ctc_processor``). History rows carry
    their ``stage``.
    """
    demo = _train_speech(hubert_inputs, utterances)
    foundation = _train_speech(foundation_inputs, foundation_utterances)
    if not foundation[0]:
        raise ValueError(
            "the foundation corpus has no train-split utterances with audio; regenerate it "
            "with `make foundation-corpus` (README 'Foundation stand-ins')"
        )
    processor = build_ctc_processor(demo[1] + foundation[1])
    config = TinyHubertConfig(**params["model"])
    mixed = (foundation[0] + demo[0], foundation[1] + demo[1])
    stages = [
        ("demo", demo, config, params["train"]),
        ("finetune", mixed, config, params["finetune"]),
    ]
    if robust := params.get("robust"):
        model_params = {**params["model"], "augment": robust["augment"]}
        stages.append(("robust", mixed, TinyHubertConfig(**model_params), robust["train"]))
    histories, model = [], None
    for stage, (waves, transcripts), stage_config, train in stages:
        result = train_hubert_ctc(
            waves,
            transcripts,
            processor,
            stage_config,
            TrainConfig(seed=seed, **train),
            f"{params['checkpoint_dir']}/{stage}",
            init=model,
        )
        model = result.model
        histories.append(pd.DataFrame(result.history).assign(stage=stage))
        logger.info("HuBERT stand-in, stage %s: %d utterances", stage, len(waves))
    return (model.cpu(), processor), pd.concat(histories, ignore_index=True)


def evaluate_speech_encoder(
    model: Any, processor: Any, hubert_inputs: HubertInputs, utterances: pd.DataFrame
) -> dict[str, Any]:
    """Character error rate of greedy CTC transcripts on the test split (all voices, and
    the voice never heard in training)."""
    test = _split(utterances, "test", hubert_inputs)
    hypotheses = transcribe(
        model, processor, [hubert_inputs.values(u) for u in test["utterance_id"]]
    )
    references = [normalise_transcript(c) for c in test["caption"]]
    unseen = test["unseen_voice"].to_numpy()
    metrics = {
        "test_cer": character_error_rate(references, hypotheses),
        "unseen_voice_cer": character_error_rate(
            [r for r, u in zip(references, unseen, strict=True) if u],
            [h for h, u in zip(hypotheses, unseen, strict=True) if u],
        )
        if unseen.any()
        else None,
        "n_test": len(test),
        "examples": [
            {"reference": r, "hypothesis": h}
            for r, h in zip(references[:5], hypotheses[:5], strict=True)
        ],
    }
    logger.info(
        "HuBERT stand-in: test CER %.3f (unseen voice %s)",
        metrics["test_cer"],
        metrics["unseen_voice_cer"],
    )
    return metrics


def _images(utterances: pd.DataFrame, image_files: Mapping[str, Callable]) -> dict[str, Any]:
    return {i: image_files[i]().convert("RGB") for i in sorted(utterances["image_id"].unique())}


def train_clip_model(
    utterances: pd.DataFrame,
    image_files: Mapping[str, Callable],
    seed: int,
    params: dict[str, Any],
    evaluation: Mapping[str, Any] | None = None,
    foundation_utterances: pd.DataFrame | None = None,
    foundation_image_files: Mapping[str, Callable] | None = None,
) -> tuple[tuple[Any, Any], pd.DataFrame]:
    """Contrastively train the CLIP stand-in on train-split image–caption pairs; resumes from
    ``params.checkpoint_dir``.

    With ``params.foundation_corpus`` the foundation corpus's train split (its 1800 images on
    varied backgrounds, captions in a wider grammar) joins the demo's: trained on the demo's
    84 light-background images and its caption templates alone, the towers tied colours to
    the background and words to their places in the template (README "Held-out speech").
    ``params.tokenizer`` is ``clip_bpe`` (OpenAI CLIP's vocabulary,
    :func:`~wavy_pipeline.models.foundation_clip.build_clip_bpe_tokenizer`) or ``corpus``
    (one token per corpus word; any other word falls apart into bytes).

    With ``params.model.attribute_loss_weight`` its attribute heads learn each image's
    ``attr_*`` values and, from the text, the ones its caption states (``stated_attributes``
    with ``evaluation.attribute_vocabulary``)."""
    if params.get("foundation_corpus") and (
        foundation_utterances is None or foundation_image_files is None
    ):
        raise ValueError(
            "foundation.clip.foundation_corpus is on but the node got no foundation corpus"
        )
    train = _split(utterances, "train")
    images = _images(train, image_files)
    if params.get("foundation_corpus"):
        extra = _split(foundation_utterances, "train")
        if clash := set(extra["image_id"]) & set(images):
            raise ValueError(f"the foundation corpus reuses demo image ids: {sorted(clash)[:5]}")
        images |= _images(extra, foundation_image_files)
        train = pd.concat([train, extra], ignore_index=True)
    vocabulary = (evaluation or {}).get("attribute_vocabulary")
    with tempfile.TemporaryDirectory() as folder:
        kind = params.get("tokenizer", "corpus")
        if kind == "clip_bpe":
            tokenizer = build_clip_bpe_tokenizer(folder)
        elif kind == "corpus":
            tokenizer = build_clip_tokenizer(train["caption"].tolist(), folder)
        else:
            raise ValueError(f"foundation.clip.tokenizer must be clip_bpe or corpus, not {kind!r}")
        processor = build_clip_processor(folder, params["image_size"], tokenizer)
    columns = [f"attr_{a}" for a in STATED_ATTRIBUTES if f"attr_{a}" in train]
    attributes = [
        {c.removeprefix("attr_"): v for c, v in row.items() if isinstance(v, str)}
        for row in train[columns].to_dict("records")
    ]
    said = stated_attributes(train, vocabulary)
    config = TinyClipConfig(image_size=params["image_size"], **params["model"])
    if config.attribute_loss_weight and not columns:
        logger.warning("CLIP stand-in: the corpus has no attributes.csv, so no attribute heads")
        config = replace(config, attribute_loss_weight=0.0)
    result = train_clip(
        [images[i] for i in train["image_id"]],
        train["caption"].tolist(),
        train["image_id"].tolist(),
        processor,
        config,
        TrainConfig(seed=seed, **params["train"]),
        params["checkpoint_dir"],
        attributes=attributes if columns else None,
        stated=[{a for a in said if row[a]} for _, row in said.iterrows()],
        protected_words=sorted(attribute_words(train, vocabulary)),
    )
    return (result.model.cpu(), processor), pd.DataFrame(result.history)


def evaluate_clip_model(
    model: Any,
    processor: Any,
    utterances: pd.DataFrame,
    image_files: Mapping[str, Callable],
    evaluation: Mapping[str, Any],
) -> dict[str, Any]:
    """Text↔image retrieval of the CLIP stand-in on the test split (5 captions per image),
    and whether captions that say where the shape is tell their image from its mirror."""
    test = _split(utterances, "test")
    images = _images(test, image_files)
    image_ids = list(images)
    text_emb = encode_clip_texts(model, processor, test["caption"].tolist())
    image_emb = encode_clip_images(model, processor, list(images.values()))
    relevant = test["image_id"].to_numpy()[:, None] == np.array(image_ids)[None, :]
    similarity = text_emb @ image_emb.T
    metrics = {
        "text_to_image": recall_at_k(similarity, relevant),
        "image_to_text": recall_at_k(similarity.T, relevant.T),
        "n_images": len(image_ids),
        "n_captions": len(test),
        **_mirror_position(
            model, processor, test, images, (text_emb, image_emb, image_ids), evaluation
        ),
    }
    logger.info(
        "CLIP stand-in: text→image %s; position against the mirror image %s",
        metrics["text_to_image"],
        metrics["mirror_position"],
    )
    return metrics


def _mirror_position(  # noqa: PLR0913, PLR0917 - the pieces evaluate_clip_model has
    model: Any,
    processor: Any,
    test: pd.DataFrame,
    images: Mapping[str, Any],
    embedded: tuple[np.ndarray, np.ndarray, list[str]],
    evaluation: Mapping[str, Any],
) -> dict[str, Any]:
    """Does a caption that says where the shape is (left/right/top/bottom) prefer its image
    over the same image mirrored, where the shape is on the other side? (0.5: position is
    not encoded.)"""
    text_emb, image_emb, image_ids = embedded
    axis_of = {word: axis for axis, pair in MIRROR_WORDS.items() for word in pair}
    if "attr_position" not in test or not len(test):
        return {"mirror_position": None, "n_mirror_position": 0}
    stated = stated_attributes(test, evaluation.get("attribute_vocabulary"))["position"]
    sided = test["attr_position"].map(axis_of.__contains__).astype(bool)
    rows = np.flatnonzero(stated.to_numpy() & sided.to_numpy())
    if not len(rows):
        return {"mirror_position": None, "n_mirror_position": 0}
    flips = {"horizontal": ImageOps.mirror, "vertical": ImageOps.flip}
    picked = test.iloc[rows]
    mirrored = encode_clip_images(
        model,
        processor,
        [
            flips[axis_of[p]](images[i])
            for i, p in zip(picked["image_id"], picked["attr_position"], strict=True)
        ],
    )
    own = image_emb[[image_ids.index(i) for i in picked["image_id"]]]
    return {
        "mirror_position": pair_preference(text_emb[rows], own, mirrored),
        "n_mirror_position": len(rows),
    }


def _judged(judge: AttributeJudge, images: list[Any]) -> pd.DataFrame:
    return pd.DataFrame([judge(image) for image in images])[list(STATED_ATTRIBUTES)]


def dev_checks(
    utterances: pd.DataFrame,
    image_files: Mapping[str, Callable],
    seed: int,
    generation: Mapping[str, Any],
    evaluation: Mapping[str, Any],
) -> tuple[Callable | None, Callable | None]:
    """The two checks on the dev split that select the diffusion stand-in's weights, read
    by the evaluation's attribute judge (``evaluation.palette``):

    * ``evaluate_vae(vae)``: how many of the dev images' colour / shape / size / position
      survive encoding and decoding (``dev_read_back``, ties broken by the lower L1
      error: a tenth of it is subtracted, less than one misread attribute);
    * ``evaluate_pipeline(pipe)``: the text-made images of the dev captions, drawn as the
      generation pipeline draws them (its steps, guidance, per-utterance seeds), scored on
      what each caption states (``dev_text``: the mean over the four attributes).

    ``(None, None)`` (no selection: the last weights) when the corpus has no dev split,
    no attributes or no palette."""
    dev = _split(utterances, "dev")
    truth_columns = [f"attr_{a}" for a in STATED_ATTRIBUTES]
    if dev.empty or not evaluation.get("palette") or not set(truth_columns) <= set(dev):
        logger.warning(
            "No dev split, attributes or palette: the diffusion stand-in keeps its last weights"
        )
        return None, None
    judge = AttributeJudge(palette={k: tuple(v) for k, v in evaluation["palette"].items()})
    images = _images(dev, image_files)
    truth = dev.drop_duplicates("image_id").set_index("image_id").loc[list(images), truth_columns]

    def evaluate_vae(vae: Any) -> dict[str, float]:
        back = reconstruct(vae, list(images.values()))
        hits = _judged(judge, back).to_numpy() == truth.to_numpy()
        l1 = float(
            np.mean(
                [
                    np.abs(np.asarray(b, np.float32) - np.asarray(o, np.float32)).mean() / 255
                    for b, o in zip(back, images.values(), strict=True)
                ]
            )
        )
        accuracy = {
            f"dev_read_back_{a}": float(hits[:, k].mean()) for k, a in enumerate(STATED_ATTRIBUTES)
        }
        return accuracy | {"dev_l1": l1, "dev_read_back": float(hits.mean()) - 0.1 * l1}

    rows = dev.reset_index(drop=True)
    rows = rows.join(
        stated_attributes(rows, evaluation.get("attribute_vocabulary")).add_prefix("stated_")
    )
    seeds = [utterance_seed(seed, u) for u in rows["utterance_id"]]

    def evaluate_pipeline(pipe: Any) -> dict[str, float]:
        pipe.set_progress_bar_config(disable=True)  # one bar per call would flood the log
        made = text_images(
            pipe,
            rows["caption"].tolist(),
            seeds,
            steps=generation["steps"],
            guidance_scale=generation["guidance_scale"],
            batch_size=generation["batch_size"],
            resolution=generation.get("resolution"),
        )
        table = rows.join(_judged(judge, made).add_prefix("judged_"))
        accuracy = {f"dev_text_{a}": v for a, v in stated_accuracy(table).items() if v is not None}
        return accuracy | {"dev_text": float(np.mean(list(accuracy.values())))}

    return evaluate_vae, evaluate_pipeline


def with_attribute_captions(train: pd.DataFrame, config: Mapping[str, Any] | None) -> pd.Series:
    """Each train image's captions (``image_id`` -> list), followed by the captions
    :func:`~wavy_pipeline.data.corpus.attribute_captions` writes from its ``attr_*`` columns
    with ``config["templates"]`` and ``config["words"]`` (none without ``config`` or
    attributes). The corpus's captions state position for about one image in eight, too
    rarely for the UNet to learn to draw it."""
    captions = train.groupby("image_id", sort=False)["caption"].apply(list)
    columns = [f"attr_{a}" for a in STATED_ATTRIBUTES]
    if not config or not config.get("templates") or not set(columns) <= set(train):
        return captions
    rows = train.drop_duplicates("image_id").set_index("image_id")[columns]
    extended = {}
    for image_id, own in captions.items():
        attributes = {a: rows.at[image_id, f"attr_{a}"] for a in STATED_ATTRIBUTES}
        written = attribute_captions(attributes, config["templates"], config.get("words"))
        extended[image_id] = own + [c for c in written if c not in own]
    return pd.Series(extended, name="caption")


def attribute_words(
    utterances: pd.DataFrame, vocabulary: Mapping[str, Mapping[str, str]] | None
) -> set[str]:
    """The words that name an attribute: the attribute vocabulary's and every value of the
    ``attr_*`` columns of :data:`STATED_ATTRIBUTES`. Random words inserted as noise must
    never be one of them, or a caption would say what its labels do not."""
    words = {w for table in (vocabulary or {}).values() for w in table}
    for column in (f"attr_{a}" for a in STATED_ATTRIBUTES):
        if column in utterances:
            words |= {v for v in utterances[column] if isinstance(v, str)}
    return words


def vocabulary_words(tokenizer: Any, protected: set[str]) -> list[str]:
    """The whole words of a CLIP tokenizer's vocabulary (tokens ending in ``</w>``, letters
    only, at least two of them), sorted, without ``protected`` (the attribute words)."""
    words = {t.removesuffix("</w>") for t in tokenizer.get_vocab() if t.endswith("</w>")}
    return sorted(w for w in words if len(w) > 1 and w.isalpha() and w not in protected)


def with_inserted_words(
    captions: pd.Series, words: list[str], per_image: int, max_words: int, seed: int
) -> pd.Series:
    """Each image's captions (``image_id`` -> list) followed by ``per_image`` copies of them,
    drawn in turn, each with 1..``max_words`` words of ``words`` inserted between its words
    (deterministic for ``seed``): the UNet learns to draw what a caption says when words no
    caption has ("um", "draw me", "please") sit between the ones it knows, as the CLIP
    stand-in's text tower learns (``insert_token_prob``)."""
    if per_image <= 0 or max_words <= 0 or not words:
        return captions
    rng = np.random.default_rng(seed)
    out = {}
    for image_id, own in captions.items():
        noisy = []
        for k in range(per_image):
            tokens = own[k % len(own)].split()
            for word in rng.choice(words, int(rng.integers(1, max_words + 1))):
                tokens.insert(int(rng.integers(0, len(tokens) + 1)), str(word))
            noisy.append(" ".join(tokens))
        out[image_id] = own + noisy
    return pd.Series(out, name=captions.name)


def train_diffusion_model(
    utterances: pd.DataFrame,
    image_files: Mapping[str, Callable],
    clip_model: Any,
    clip_processor: Any,
    seed: int,
    params: dict[str, Any],
    generation: dict[str, Any],
    evaluation: dict[str, Any],
) -> tuple[Any, pd.DataFrame]:
    """Train the latent-diffusion stand-in (VAE, then a text-conditioned UNet, then with
    ``params.finetune_model`` the UNet fine-tuned under that schedule, ``unet_finetune``)
    on the train split's images, their captions and the captions
    ``params.attribute_captions`` writes from each image's attributes
    (:func:`with_attribute_captions`), and with ``params.inserted_words`` copies of them
    with random vocabulary words inserted (:func:`with_inserted_words`). Its text encoder is the CLIP stand-in's text tower,
    as SD v1.4's is CLIP ViT-L/14's. Each stage keeps the weights that do best on the dev
    split (:func:`dev_checks`), and resumes from ``params.checkpoint_dir``."""
    train = _split(utterances, "train")
    images = _images(train, image_files)
    captions = with_attribute_captions(train, params.get("attribute_captions"))
    if noise := params.get("inserted_words"):
        protected = attribute_words(train, evaluation.get("attribute_vocabulary"))
        words = vocabulary_words(clip_processor.tokenizer, protected)
        captions = with_inserted_words(
            captions, words, noise["per_image"], noise["max_words"], seed
        )
    text_encoder = text_encoder_from_clip(clip_model)
    evaluate_vae, evaluate_pipeline = dev_checks(
        utterances, image_files, seed, generation, evaluation
    )
    config = TinyDiffusionConfig(
        cross_attention_dim=text_encoder.config.hidden_size, **params["model"]
    )
    tuned = finetune_config(config, params.get("finetune_model"))
    pipe, histories = train_stand_in(
        list(images.values()),
        [captions[i] for i in images],
        text_encoder,
        clip_processor.tokenizer,
        config,
        TrainConfig(seed=seed, **params["vae_train"]),
        TrainConfig(seed=seed, **params["unet_train"]),
        params["checkpoint_dir"],
        finetune=(tuned, TrainConfig(seed=seed, **params["unet_finetune"])) if tuned else None,
        evaluate_vae=evaluate_vae,
        evaluate_pipeline=evaluate_pipeline,
    )
    history = pd.concat(
        [pd.DataFrame(rows).assign(stage=stage) for stage, rows in histories.items()],
        ignore_index=True,
    )
    return pipe, history
