"""Parse and validate corpora in the Flickr8k Audio Caption Corpus layout.

Every problem becomes a quarantine row (what, where, why) instead of an exception, so a
dirty corpus still yields its valid utterances; :func:`check_bad_fraction` decides when
too little is left to go on.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import pandas as pd

from wavy_pipeline.metrics.retrieval import attributes_named

QUARANTINE_COLUMNS = ["stage", "kind", "source", "line_no", "key", "reason"]
UTTERANCE_COLUMNS = [
    "utterance_id",
    "wav",
    "image",
    "image_id",
    "caption_index",
    "caption",
    "split",
    "speaker",
    "unseen_voice",
    "audio_path",
    "image_path",
]

_WAV2CAPT = re.compile(r"^(?P<wav>\S+)\s+(?P<image>\S+)\s+#(?P<n>\d+)$")
_CAPTION = re.compile(r"^(?P<image>[^\t#]+)#(?P<n>\d+)(?:\t(?P<caption>.*))?$")
logger = logging.getLogger(__name__)

_WAV2SPK = re.compile(r"^(?P<wav>\S+)\s+(?P<speaker>\S+)$")


class CorpusError(ValueError):
    """The corpus cannot be used; the message says what is wrong and where."""


IMAGE_SUFFIX = ".jpg"  # the Flickr8k layout's images; ``raw_image_files`` lists these


def stem(name: str) -> str:
    """File name without its folder and last suffix: the utterance id of a wav."""
    return PurePosixPath(name).stem


def image_key(name: str) -> str | None:
    """Partition key of an image named in the metadata (``sub/x.jpg`` → ``sub/x``), None
    for a name that is not a ``.jpg`` (no image partition can hold it)."""
    return name[: -len(IMAGE_SUFFIX)] if name.endswith(IMAGE_SUFFIX) else None


def is_valid_utf8(text: str) -> bool:
    """False for text decoded with ``surrogateescape`` from bytes that are not UTF-8."""
    return not any("\udc80" <= char <= "\udcff" for char in text)


def printable(text: str) -> str:
    """Text safe to store and log: bytes that were not UTF-8 are shown as ``\\xNN``."""
    if is_valid_utf8(text):
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@dataclass
class Quarantine:
    """Collects quarantine rows of one stage."""

    stage: str
    rows: list[dict] = field(default_factory=list)

    def add(self, kind: str, source: str, line_no: int | None, key: str, reason: str) -> None:
        self.rows.append(
            {
                "stage": self.stage,
                "kind": kind,
                "source": source,
                "line_no": line_no,
                "key": printable(key),  # a non-UTF-8 line keeps its bytes, escaped
                "reason": printable(reason),
            }
        )

    def frame(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.rows, columns=QUARANTINE_COLUMNS)
        return frame.astype({"line_no": "Int64"})


def _lines(lines: list[str], source: str, quarantine: Quarantine, kind: str):
    """Yield (line_no, stripped line), skipping blanks and quarantining non-UTF-8 lines."""
    for line_no, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        if not is_valid_utf8(line):
            quarantine.add(kind, source, line_no, line[:40], "line is not valid UTF-8")
            continue
        yield line_no, line


def parse_wav2capt(lines: list[str], quarantine: Quarantine) -> pd.DataFrame:
    """``<wav> <image> #<n>`` lines → one row per utterance; duplicates keep the first."""
    rows, first_seen = [], {}
    for line_no, line in _lines(lines, "wav2capt.txt", quarantine, "utterance"):
        match = _WAV2CAPT.match(line)
        if not match:
            reason = "malformed line, expected '<wav> <image.jpg> #<n>'"
            quarantine.add("utterance", "wav2capt.txt", line_no, line[:80], reason)
            continue
        wav, image, n = match["wav"], match["image"], int(match["n"])
        if wav in first_seen:
            same = first_seen[wav][1:] == (image, n)
            what = "duplicate line" if same else "wav listed again for another caption"
            reason = f"{what} (kept line {first_seen[wav][0]})"
            quarantine.add("utterance", "wav2capt.txt", line_no, wav, reason)
            continue
        first_seen[wav] = (line_no, image, n)
        rows.append({"wav": wav, "image": image, "caption_index": n, "line_no": line_no})
    return pd.DataFrame(rows, columns=["wav", "image", "caption_index", "line_no"])


def parse_captions(lines: list[str], quarantine: Quarantine) -> pd.DataFrame:
    """``<image>#<n>\\t<caption>`` lines → (image, caption_index, caption)."""
    rows, seen = [], set()
    source = "Flickr8k.token.txt"
    for line_no, line in _lines(lines, source, quarantine, "caption"):
        match = _CAPTION.match(line)
        if not match:
            reason = "malformed line, expected '<image.jpg>#<n><TAB><caption>'"
            quarantine.add("caption", source, line_no, line[:80], reason)
            continue
        key = (match["image"].strip(), int(match["n"]))
        caption = " ".join((match["caption"] or "").split())
        if not caption:
            quarantine.add("caption", source, line_no, f"{key[0]}#{key[1]}", "empty caption")
        elif key in seen:
            quarantine.add("caption", source, line_no, f"{key[0]}#{key[1]}", "duplicate caption id")
        else:
            seen.add(key)
            rows.append({"image": key[0], "caption_index": key[1], "caption": caption})
    return pd.DataFrame(rows, columns=["image", "caption_index", "caption"])


def parse_speakers(lines: list[str], quarantine: Quarantine) -> dict[str, str]:
    """``<wav> <speaker>`` lines → {wav: speaker}."""
    speakers: dict[str, str] = {}
    for line_no, line in _lines(lines, "wav2spk.txt", quarantine, "speaker"):
        match = _WAV2SPK.match(line)
        if not match:
            reason = "malformed line, expected '<wav> <speaker>'"
            quarantine.add("speaker", "wav2spk.txt", line_no, line[:80], reason)
        elif speakers.setdefault(match["wav"], match["speaker"]) != match["speaker"]:
            reason = f"second speaker for this wav (kept '{speakers[match['wav']]}')"
            quarantine.add("speaker", "wav2spk.txt", line_no, match["wav"], reason)
    return speakers


def parse_splits(
    split_lines: dict[str, list[str]], image_keys: set[str], quarantine: Quarantine
) -> dict[str, list[str]]:
    """Split lists → {image key: [splits it is listed in]} for images that exist."""
    membership: dict[str, list[str]] = {}
    for split, lines in split_lines.items():
        source = split_file(split)
        for line_no, image in _lines(lines, source, quarantine, "split"):
            key = image_key(image)
            if key not in image_keys:
                quarantine.add("split", source, line_no, image, "listed image does not exist")
            elif split not in membership.setdefault(key, []):
                membership[key].append(split)
    return membership


def split_file(split: str) -> str:
    """Name of the list of a split's images in the Flickr8k layout."""
    return f"Flickr_8k.{split}Images.txt"


def parse_attributes(lines: list[str], quarantine: Quarantine) -> pd.DataFrame:
    """Optional sidecar CSV with one row of attributes per image (``image`` column)."""
    lines = [line for _, line in _lines(lines, "attributes.csv", quarantine, "attributes")]
    if not lines:
        return pd.DataFrame(columns=["image"])
    try:
        table = pd.read_csv(io.StringIO("\n".join(lines)), dtype=str)
    except (pd.errors.ParserError, ValueError) as exc:
        quarantine.add("attributes", "attributes.csv", None, "", f"unreadable CSV: {exc}")
        return pd.DataFrame(columns=["image"])
    if "image" not in table.columns:
        quarantine.add("attributes", "attributes.csv", None, "", "no 'image' column")
        return pd.DataFrame(columns=["image"])
    duplicated = table["image"].duplicated()
    for image in table.loc[duplicated, "image"]:
        quarantine.add("attributes", "attributes.csv", None, image, "duplicate image row")
    return table.loc[~duplicated].rename(
        columns={c: f"attr_{c}" for c in table.columns if c != "image"}
    )


# ``utterances.csv``: optional sidecar, one row per utterance (by wav): who spoke it and
# how, and which attributes its caption states (held-out corpora; the demo has none)
UTTERANCE_META_COLUMNS = ["synthesiser", "voice", "phrasing", "snr_db", "states"]
STATED_ATTRIBUTES = ("color", "shape", "size", "position")


def parse_utterance_meta(lines: list[str], quarantine: Quarantine) -> pd.DataFrame:
    """Optional sidecar CSV with one row per utterance (``wav`` column), read into the
    utterance columns of :data:`UTTERANCE_META_COLUMNS` (those it has).

    ``states`` lists, space-separated, the attributes the caption states (of
    :data:`STATED_ATTRIBUTES`). A ``speaker`` column is ignored (``wav2spk.txt`` says who
    speaks). Bad rows are quarantined with the reason: a duplicate wav, a row without wav,
    an unknown attribute in ``states``, an ``snr_db`` that is not a number.
    """
    source = "utterances.csv"
    numbered = list(_lines(lines, source, quarantine, "utterance_meta"))
    empty = pd.DataFrame(columns=["wav"])
    if not numbered:
        return empty
    try:
        table = pd.read_csv(io.StringIO("\n".join(line for _, line in numbered)), dtype=str)
    except (pd.errors.ParserError, ValueError) as exc:
        quarantine.add("utterance_meta", source, None, "", f"unreadable CSV: {exc}")
        return empty
    if "wav" not in table.columns:
        quarantine.add("utterance_meta", source, None, "", "no 'wav' column")
        return empty
    keep = [c for c in UTTERANCE_META_COLUMNS if c in table.columns]
    rows, seen = [], set()
    for line_no, row in zip((n for n, _ in numbered[1:]), table.itertuples(index=False)):
        record = row._asdict()
        wav = record["wav"]
        problem = None
        if not isinstance(wav, str) or not wav.strip():
            problem = "row names no wav"
        elif wav in seen:
            problem = "duplicate wav row"
        elif isinstance(record.get("states"), str) and (
            unknown := set(record["states"].split()) - set(STATED_ATTRIBUTES)
        ):
            problem = f"states names unknown attributes: {' '.join(sorted(unknown))}"
        elif isinstance(record.get("snr_db"), str) and pd.isna(
            pd.to_numeric(record["snr_db"], errors="coerce")
        ):
            problem = f"snr_db is not a number: {record['snr_db'][:20]!r}"
        if problem:
            quarantine.add("utterance_meta", source, line_no, str(wav)[:40], problem)
            continue
        seen.add(wav)
        rows.append({"wav": wav, **{c: record[c] for c in keep}})
    meta = pd.DataFrame(rows, columns=["wav", *keep])
    if "snr_db" in meta:
        meta["snr_db"] = pd.to_numeric(meta["snr_db"])
    return meta


def stated_attributes(
    utterances: pd.DataFrame, vocabulary: Mapping[str, Mapping[str, str]] | None
) -> pd.DataFrame:
    """One boolean column per attribute of :data:`STATED_ATTRIBUTES`: does the utterance's
    caption state it? From the ``states`` column (``utterances.csv``) where it has a value,
    else from the caption's words (:func:`wavy_pipeline.metrics.retrieval.attributes_named`
    with ``vocabulary``); without either, every attribute counts as stated (a corpus whose
    sidecar records an attribute is taken to say it)."""
    states = utterances["states"] if "states" in utterances else pd.Series(None, utterances.index)
    named = [
        set(s.split())
        if isinstance(s, str)
        else (set(attributes_named(caption, vocabulary)) if vocabulary else set(STATED_ATTRIBUTES))
        for s, caption in zip(states, utterances["caption"], strict=True)
    ]
    return pd.DataFrame(
        {a: [a in n for n in named] for a in STATED_ATTRIBUTES}, index=utterances.index
    )


def attribute_captions(
    attributes: Mapping[str, str | None],
    templates: Sequence[str],
    words: Mapping[str, Mapping[str, str | Sequence[str]]] | None = None,
) -> list[str]:
    """Captions written from an image's attributes (its ``attributes.csv`` row), one per
    template, that state every attribute the template names: recaptioning, as DALL-E 3
    trains on descriptive captions so that the model follows every word of a prompt.

    A template's fields are attribute names (``"a {size} {color} {shape} {position}"``);
    each is replaced by ``words[attribute][value]``, or by the value itself where ``words``
    has no entry. A list of words is used in turn, one per template (template ``i`` takes
    ``words[i % len(words)]``), so the captions are deterministic. A template that names an
    attribute the image lacks (``None``, NaN or empty) is skipped."""
    words = words or {}
    fields = re.compile(r"{(\w+)}")
    captions = []
    for i, template in enumerate(templates):
        names = fields.findall(template)
        values = {name: attributes.get(name) for name in names}
        if any(not isinstance(v, str) or not v for v in values.values()):
            continue
        chosen = {}
        for name, value in values.items():
            options = words.get(name, {}).get(value, value)
            options = [options] if isinstance(options, str) else list(options)
            chosen[name] = options[i % len(options)]
        captions.append(" ".join(template.format(**chosen).split()))
    return captions


def unreadable_images(
    image_files: Mapping[str, Callable[[], object]], image_ids: Iterable[str]
) -> dict[str, str]:
    """{image id: reason} for the images among ``image_ids`` that cannot be decoded.

    Each image is loaded the way the later stages load it (its partition's loader decodes
    it fully), so a truncated or corrupt JPEG is found here, not as a crash in the middle
    of the features or evaluation pipelines. On Flickr8k this decodes 8,000 JPEGs once
    per ingestion run (tens of seconds on one core).
    """
    problems = {}
    for image_id in sorted(set(image_ids)):
        try:
            image_files[image_id]()
        except Exception as exc:  # noqa: BLE001 - any decoder error means "unreadable"
            lines = str(exc).strip().splitlines() or [type(exc).__name__]
            problems[image_id] = lines[-1][:200]
    return problems


def build_utterances(
    wav2capt: pd.DataFrame,
    captions: pd.DataFrame,
    speakers: dict[str, str],
    splits: dict[str, list[str]],
    audio_keys: set[str],
    image_keys: set[str],
    attributes: pd.DataFrame,
    quarantine: Quarantine,
    corpus_root: str = "",
    bad_images: Mapping[str, str] | None = None,
    dev_fallback_fraction: float | None = None,
    utterance_meta: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Join the parsed files into the utterance table; quarantine what cannot be used.

    ``audio_keys`` are the files under ``wavs/`` by whole name (folder and extension, as
    wav2capt lists them); ``image_keys`` the partition keys under ``Flicker8k_Dataset/``
    (:func:`image_key`); ``bad_images`` maps the keys of images that exist but cannot be
    decoded to the reason (:func:`unreadable_images`). Each wav2capt record becomes one
    row or one quarantine entry. Two files with one utterance id (``x.wav`` and
    ``x.flac``, or ``a/x.wav`` and ``b/x.wav``) are both quarantined, never paired.

    ``speakers`` empty means the corpus has no speaker list: every speaker is
    ``unknown`` and no utterance is an unseen voice (the node logs that decision once);
    otherwise a wav it does not list is quarantined. An empty dev split is filled by
    :func:`carve_dev` when ``dev_fallback_fraction`` is set. ``utterance_meta``
    (:func:`parse_utterance_meta`) adds its columns by wav; a row naming no utterance of
    the table is quarantined.
    """
    bad_images = bad_images or {}
    caption_text = {(r.image, r.caption_index): r.caption for r in captions.itertuples()}
    owners: dict[str, list[str]] = {}
    for wav in wav2capt["wav"]:
        owners.setdefault(stem(wav), []).append(wav)
    rows = []
    for rec in wav2capt.itertuples():
        image_id = image_key(rec.image)
        split_list = splits.get(image_id, [])
        problem = None
        if len(owners[stem(rec.wav)]) > 1:
            problem = (
                f"{len(owners[stem(rec.wav)])} audio files map to utterance id "
                f"'{stem(rec.wav)}': {', '.join(owners[stem(rec.wav)])}"
            )
        elif rec.wav not in audio_keys:
            problem = "audio file is missing"
        elif image_id is None:
            problem = f"image {rec.image} is not a {IMAGE_SUFFIX} file"
        elif image_id not in image_keys:
            problem = f"image {rec.image} is missing"
        elif image_id in bad_images:
            problem = f"image {rec.image} is unreadable: {bad_images[image_id]}"
        elif (rec.image, rec.caption_index) not in caption_text:
            problem = f"no caption {rec.image}#{rec.caption_index} (audio without caption)"
        elif not split_list:
            problem = f"image {rec.image} is in no split"
        elif len(split_list) > 1:
            problem = f"image {rec.image} is in several splits: {', '.join(split_list)}"
        elif speakers and rec.wav not in speakers:
            problem = "speaker missing from wav2spk.txt"
        if problem:
            quarantine.add("utterance", "wav2capt.txt", rec.line_no, rec.wav, problem)
            continue
        rows.append(
            {
                "utterance_id": stem(rec.wav),
                "wav": rec.wav,
                "image": rec.image,
                "image_id": image_id,
                "caption_index": rec.caption_index,
                "caption": caption_text[(rec.image, rec.caption_index)],
                "split": split_list[0],
                "speaker": speakers.get(rec.wav, "unknown"),
                "audio_path": f"{corpus_root}/flickr_audio/wavs/{rec.wav}",
                "image_path": f"{corpus_root}/Flicker8k_Dataset/{rec.image}",
            }
        )
    table = pd.DataFrame(rows, columns=[c for c in UTTERANCE_COLUMNS if c != "unseen_voice"])
    _quarantine_unused(wav2capt, captions, splits, audio_keys, image_keys, quarantine)
    if dev_fallback_fraction and not (table["split"] == "dev").any():
        table = carve_dev(table, dev_fallback_fraction)

    train_speakers = set(table.loc[table["split"] == "train", "speaker"])
    table["unseen_voice"] = ~table["speaker"].isin(train_speakers) if speakers else False
    table = table[UTTERANCE_COLUMNS]
    if len(attributes.columns) > 1:
        table = table.merge(attributes, on="image", how="left")
    if utterance_meta is not None and len(utterance_meta.columns) > 1:
        for wav in sorted(set(utterance_meta["wav"]) - set(table["wav"])):
            quarantine.add("utterance_meta", "utterances.csv", None, wav, "no such utterance")
        table = table.merge(utterance_meta, on="wav", how="left")
    return table.sort_values("utterance_id", kind="stable").reset_index(drop=True)


def carve_dev(table: pd.DataFrame, fraction: float) -> pd.DataFrame:
    """The dev fallback: move ``fraction`` of the train *images* (at least one, never the
    last one) with all their utterances into dev. Which images is fixed by a hash of their
    ids (the same corpus always gives the same dev split); logged as a warning."""
    images = sorted(table.loc[table["split"] == "train", "image_id"].unique())
    n_dev = min(max(1, round(fraction * len(images))), len(images) - 1)
    if n_dev < 1:
        return table
    ranked = sorted(images, key=lambda i: hashlib.sha256(i.encode()).hexdigest())
    chosen = set(ranked[:n_dev])
    table = table.copy()
    table.loc[table["image_id"].isin(chosen), "split"] = "dev"
    logger.warning(
        "The dev split (%s) is empty: %d of the %d train images (%d utterances, "
        "ingestion.dev_fallback_fraction=%g) are used as dev instead.",
        split_file("dev"),
        n_dev,
        len(images),
        int(table["image_id"].isin(chosen).sum()),
        fraction,
    )
    return table


def _quarantine_unused(wav2capt, captions, splits, audio_keys, image_keys, quarantine) -> None:
    """Record corpus items no utterance uses: they are reported, never silently dropped."""
    spoken = set(zip(wav2capt["image"], wav2capt["caption_index"], strict=True))
    source = "Flickr8k.token.txt"
    for rec in captions.itertuples():
        key = f"{rec.image}#{rec.caption_index}"
        if image_key(rec.image) not in image_keys:
            quarantine.add("caption", source, None, key, "caption of an image that does not exist")
        elif (rec.image, rec.caption_index) not in spoken:
            quarantine.add("caption", source, None, key, "caption without audio")
    for key in sorted(audio_keys - set(wav2capt["wav"])):
        quarantine.add("file", "wavs/", None, key, "audio file not listed in wav2capt.txt")
    for key in sorted(image_keys - set(splits)):
        quarantine.add("image", "Flicker8k_Dataset/", None, key, "image is in no split")


def check_splits(utterances: pd.DataFrame, min_utterances: Mapping[str, int]) -> None:
    """Stop when a split has fewer usable utterances than ``min_utterances[split]``.

    The message names the split's list file and what to fix, so the run stops here
    rather than in training (an empty train split has no full batch, an empty dev split
    nothing to early-stop on, an empty test split nothing to report).
    """
    counts = Counter(utterances["split"])
    short = [
        (split, counts.get(split, 0), need)
        for split, need in min_utterances.items()
        if counts.get(split, 0) < need
    ]
    if not short:
        return
    parts = "; ".join(
        f"the {split} split ({split_file(split)}) has {have} usable utterances, fewer than {need}"
        for split, have, need in short
    )
    raise CorpusError(
        f"{parts}. List more images in those files (each image of a split brings its "
        "captions' utterances, and its utterances must pass the quarantine), or lower "
        "ingestion.min_split_utterances"
        + (
            " (train: at least one batch of speechclip.train.batch_size)"
            if any(s == "train" for s, _, _ in short)
            else ""
        )
        + "."
    )


def check_bad_fraction(
    n_records: int,
    n_valid: int,
    quarantine: pd.DataFrame,
    max_bad_fraction: float,
    where: str = "the ingestion quarantine table",
) -> float:
    """Fail with a summary of reasons when nothing, or too little, of the corpus is usable.

    ``where`` names the quarantine table the message points to (the node passes the
    path of the version this run saved).

    Returns:
        The fraction of wav2capt records that were quarantined.
    """
    bad = quarantine[quarantine["kind"] == "utterance"]
    fraction = len(bad) / n_records if n_records else 1.0
    if n_valid and fraction <= max_bad_fraction:
        return fraction
    reasons = Counter(re.sub(r"\S+\.(jpg|wav)|line \d+", "…", r) for r in bad["reason"])
    top = "; ".join(f"{count} × {reason}" for reason, count in reasons.most_common(5))
    if not n_valid:
        raise CorpusError(
            f"No valid utterance in the corpus ({n_records} wav2capt records). "
            f"Most common problems: {top or 'wav2capt.txt has no records'}. "
            f"Every problem is in {where}."
        )
    raise CorpusError(
        f"{fraction:.1%} of the {n_records} wav2capt records are unusable, more than "
        f"max_bad_fraction={max_bad_fraction:.0%}. Most common problems: {top}. "
        f"See {where}, or raise ingestion.max_bad_fraction (then `kedro run --from-nodes "
        "check_ingestion` checks again without re-reading the corpus)."
    )
