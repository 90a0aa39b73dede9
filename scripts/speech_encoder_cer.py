"""Character error rate of the HuBERT stand-in on the demo's test split and on the held-out
corpus, per synthesiser: one row per call, for comparing speech-encoder recipes.

Run after a default ``kedro run`` (which persists ``hubert_inputs`` and
``heldout.hubert_inputs``); it scores the latest ``speech_encoder`` version (train one with
``kedro run --pipelines foundation --nodes train_speech_encoder``)::

    python scripts/speech_encoder_cer.py [--label NAME]
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import pandas as pd
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from wavy_pipeline.metrics.asr import character_error_rate, normalise_transcript
from wavy_pipeline.models.foundation_hubert import transcribe

ROOT = Path(__file__).resolve().parents[1]


def cer(frame: pd.DataFrame) -> float:
    return character_error_rate(frame["reference"].tolist(), frame["hypothesis"].tolist())


def main() -> None:
    logging.getLogger("kedro").setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="", help="the row's name in the table")
    args = parser.parse_args()
    os.chdir(ROOT)  # the catalog's paths are relative to the project
    bootstrap_project(ROOT)
    with KedroSession.create(project_path=ROOT) as session:
        catalog = session.load_context().catalog
        model = catalog.load("speech_encoder@ctc")
        processor = catalog.load("speech_encoder@processor")
        row: dict[str, object] = {"recipe": args.label or "latest"}
        for prefix in ("", "heldout."):
            utterances = catalog.load(prefix + "utterances")
            inputs = catalog.load(prefix + "hubert_inputs")
            if not prefix:
                utterances = utterances[utterances["split"] == "test"]
            utterances = utterances[utterances["utterance_id"].map(inputs.__contains__)]
            scored = utterances.assign(
                hypothesis=transcribe(
                    model, processor, [inputs.values(u) for u in utterances["utterance_id"]]
                ),
                reference=[normalise_transcript(c) for c in utterances["caption"]],
            )
            if prefix:
                row["held-out, all"] = cer(scored)
                for synthesiser, group in scored.groupby("synthesiser"):
                    row[f"held-out {synthesiser}"] = cer(group)
            else:
                row["test"] = cer(scored)
                row["unseen voice"] = cer(scored[scored["unseen_voice"]])
    print("| " + " | ".join(row) + " |")
    print("|" + "---|" * len(row))
    cells = [v if isinstance(v, str) else f"{v:.3f}" for v in row.values()]
    print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
