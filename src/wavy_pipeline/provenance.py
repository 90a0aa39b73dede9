"""What every reported figure was measured on: the corpus, the dataset versions, the run.

* :func:`fingerprint_corpus` (a node of ``ingestion``) hashes the corpus's metadata files
  (wav2capt, speakers, captions, splits, attributes): ``corpus_fingerprint``, versioned.
* :class:`wavy_pipeline.provenance_hooks.ProvenanceHooks` puts ``run_provenance`` in the
  catalog when a run starts: the run (session id, env, pipelines, code version) and the
  version every versioned dataset resolves to in it (this run's own version for what the
  run writes, the loaded one for the rest, ``--load-versions`` included).
* :func:`record` is the ``provenance`` block of a metrics file: the corpus, the versions of
  the datasets named, the run.
* :func:`check_compatible` refuses, with what to run, to combine outputs of different
  corpora or different models.

Plain Python: no Kedro here (the hook is Kedro's side).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

# The metadata the fingerprint covers: catalog entry → file in the Flickr8k Audio layout
# (README "Corpus layout")
METADATA = {
    "raw_wav2capt": "flickr_audio/wav2capt.txt",
    "raw_captions": "Flickr8k_text/Flickr8k.token.txt",
    "raw_speakers": "flickr_audio/wav2spk.txt",
    "raw_train_images": "Flickr8k_text/Flickr_8k.trainImages.txt",
    "raw_dev_images": "Flickr8k_text/Flickr_8k.devImages.txt",
    "raw_test_images": "Flickr8k_text/Flickr_8k.testImages.txt",
    "raw_attributes": "attributes.csv",
    "raw_utterance_meta": "utterances.csv",
}


class ProvenanceError(RuntimeError):
    """Outputs of different corpora or models were about to be combined."""


def _digest(lines: Sequence[str]) -> str:
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode("utf-8", "surrogateescape"))
        h.update(b"\n")
    return h.hexdigest()


def fingerprint_corpus(corpus_root: str, *metadata: list[str]) -> dict[str, Any]:
    """The corpus's identity: its root and a SHA-256 over its metadata files' lines, with
    each file's own hash and line count.

    Args:
        corpus_root: where the corpus lies, recorded as given.
        metadata: the lines of each file of :data:`METADATA`, in its order (a missing
            optional file, such as ``attributes.csv``, counts as empty).
    """
    if len(metadata) != len(METADATA):
        raise ValueError(f"need the lines of {len(METADATA)} files, got {len(metadata)}")
    files = {
        name: {"sha256": _digest(lines), "lines": len(lines)}
        for name, lines in zip(METADATA.values(), metadata, strict=True)
    }
    overall = hashlib.sha256()
    for name, entry in files.items():
        overall.update(f"{name}\t{entry['sha256']}\n".encode())
    return {
        "root": str(corpus_root),
        "fingerprint": overall.hexdigest()[:16],
        "files": files,
    }


def run_record(
    run_params: Mapping[str, Any], versions: Mapping[str, str | None], code: Mapping[str, Any]
) -> dict[str, Any]:
    """``run_provenance``: the run and the version each versioned dataset resolves to."""
    return {
        "run": {
            "session_id": run_params.get("run_id"),  # also the version of what it saved
            "env": run_params.get("env"),
            "pipelines": run_params.get("pipeline_names"),
            "runtime_params": dict(run_params.get("runtime_params") or {}),
            "load_versions": dict(run_params.get("load_versions") or {}),
            **code,
        },
        "datasets": dict(versions),
    }


def namespace_view(run_provenance: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    """``run_provenance`` as the nodes of a Kedro namespace see it: each dataset name
    resolves to the namespace's own dataset (``heldout.utterances`` for ``utterances``)
    where one exists, else to the shared one (the models); the run records the namespace.
    So :func:`record` and :func:`check_compatible` work unchanged inside the namespace."""
    versions = dict(run_provenance.get("datasets", {}))
    prefix = f"{namespace}."
    local = {k.removeprefix(prefix): v for k, v in versions.items() if k.startswith(prefix)}
    shared = {k: v for k, v in versions.items() if not k.startswith(prefix)}
    return {
        "run": dict(run_provenance.get("run", {})) | {"namespace": namespace},
        "datasets": shared | local,
    }


def models_differ(
    ours: Mapping[str, Any], theirs: Mapping[str, Any], models: Sequence[str]
) -> str | None:
    """Why two ``provenance`` blocks (of :func:`record`) were not measured with the same
    models (the first of ``models`` whose versions are both known and differ), or None."""
    for name in models:
        a = ours.get("datasets", {}).get(name)
        b = theirs.get("datasets", {}).get(name)
        if a and b and a != b:
            return f"{name} version {b} there, {a} here"
    return None


def record(
    corpus: Mapping[str, Any] | None,
    run_provenance: Mapping[str, Any] | None,
    datasets: Sequence[str],
) -> dict[str, Any]:
    """The ``provenance`` block of a metrics file: corpus root and fingerprint, the version
    of each dataset in ``datasets`` (None: not versioned or not known), and the run."""
    versions = (run_provenance or {}).get("datasets", {})
    return {
        "corpus": {k: (corpus or {}).get(k) for k in ("root", "fingerprint")},
        "datasets": {name: versions.get(name) for name in datasets},
        "run": dict((run_provenance or {}).get("run", {})),
    }


def check_compatible(
    corpus: Mapping[str, Any],
    retrieval: Mapping[str, Any],
    generated_index: pd.DataFrame,
    utterances: pd.DataFrame,
    run_provenance: Mapping[str, Any] | None,
) -> None:
    """Refuse to combine outputs of different corpora or models (:class:`ProvenanceError`,
    saying what to run). Checked: the retrieval metrics were measured on this corpus and
    with the SpeechCLIP model now in use; the generated images are of this corpus's
    utterances and captions. (Which adapter made the images is not checked: a version
    older than the adapter's may be the same weights, as a resumed training saves them.)"""
    versions = (run_provenance or {}).get("datasets", {})
    root = corpus.get("root")
    namespace = (run_provenance or {}).get("run", {}).get("namespace")

    def rerun(pipeline: str) -> str:  # inside a namespace (heldout), its own pipeline
        if namespace:
            return f"kedro run --params {namespace}_corpus_root={root} --pipelines {namespace}"
        return f"kedro run --params corpus_root={root} --pipelines {pipeline}"

    theirs = retrieval.get("provenance")
    if not theirs:
        raise ProvenanceError(
            f"retrieval_metrics (version {versions.get('retrieval_metrics')}) records no "
            f"corpus (it predates provenance records): run `{rerun('speechclip')}`"
        )
    other = theirs.get("corpus", {})
    if other.get("fingerprint") != corpus.get("fingerprint"):
        raise ProvenanceError(
            f"retrieval_metrics (version {versions.get('retrieval_metrics')}) was measured on "
            f"corpus {other.get('root')} (fingerprint {other.get('fingerprint')}), but this "
            f"run's corpus is {root} (fingerprint {corpus.get('fingerprint')}): run "
            f"`{rerun('speechclip')}` first, or pick a matching version with "
            "--load-versions"
        )
    used, now = theirs.get("datasets", {}).get("speechclip_model"), versions.get("speechclip_model")
    if used and now and used != now:
        raise ProvenanceError(
            f"retrieval_metrics was computed with speechclip_model {used}, but the model in "
            f"use is version {now}: run `{rerun('speechclip')}`, or "
            f"--load-versions speechclip_model:{used}"
        )
    captions = utterances.set_index("utterance_id")["caption"]
    made = generated_index.drop_duplicates("utterance_id")
    known = made["utterance_id"].isin(captions.index)
    same = known & (made["caption"].to_numpy() == captions.reindex(made["utterance_id"]).to_numpy())
    if not same.all():
        example = made.loc[~same, "utterance_id"].iloc[0]
        raise ProvenanceError(
            f"generated_images (version {versions.get('generated_images')}) were made from "
            f"another corpus: {int((~same).sum())} of their {len(made)} utterances are not in "
            f"this corpus's utterance table with the same caption (e.g. {example!r}): run "
            f"`{rerun('generation')}` first"
        )
