"""Is held-out speech-made colour lost in the HuBERT stand-in or after it?

With the models of the latest default run, draws one speech-made image of every held-out
utterance (all of them, not the default run's 44), transcribes each with the HuBERT
stand-in's CTC head (greedy), and prints tables of the colour the attribute judge
reads back: by synthesiser and phrasing family, and by whether the transcript contains the
caption's colour word ("heard"). Where the word was heard and the colour is still wrong,
the loss is after the speech encoder; where it was not heard, in it.

Usage (after a default ``kedro run`` in the project folder)::

    .venv/bin/python scripts/diagnose_heard_colour.py [--csv OUT.csv]
"""

from __future__ import annotations

import argparse
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from wavy_pipeline.generation.generate import prepare_pipeline, utterance_seed
from wavy_pipeline.metrics.attribute_judge import AttributeJudge
from wavy_pipeline.models.foundation_hubert import transcribe

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    """Parse arguments, draw, transcribe, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("kedro").setLevel(logging.WARNING)
    bootstrap_project(ROOT)
    with KedroSession.create(project_path=ROOT) as session:
        context = session.load_context()
        catalog, params = context.catalog, context.params
        pipe = catalog.load("diffusion@pipeline")
        processor = catalog.load("speech_encoder@processor")
        ctc = catalog.load("speech_encoder@ctc")
        adapter = catalog.load("speech_adapter").eval()
        speech = catalog.load("heldout.speech_features")
        utterances = catalog.load("heldout.utterances")
        inputs = catalog.load("heldout.hubert_inputs")
    judge = AttributeJudge(
        palette={k: tuple(v) for k, v in params["evaluation"]["palette"].items()}
    )
    options = {
        "num_inference_steps": params["generation"]["steps"],
        "guidance_scale": params["generation"]["guidance_scale"],
    }
    prepare_pipeline(pipe, device="cpu", dtype="auto")
    rows = utterances[utterances["utterance_id"].isin(speech.keys)].reset_index(drop=True)
    ids = rows["utterance_id"].tolist()
    rows["transcript"] = transcribe(ctc, processor, [inputs.values(u) for u in ids])
    judged = []
    for start in range(0, len(ids), 16):
        batch = ids[start : start + 16]
        generators = [
            torch.Generator("cpu").manual_seed(utterance_seed(params["seed"], u)) for u in batch
        ]
        feats = torch.from_numpy(np.asarray(speech.take("layers", batch), np.float32))
        with torch.inference_mode():
            images = pipe(prompt_embeds=adapter(feats), generator=generators, **options).images
        judged += [judge(im)["color"] for im in images]
    rows["colour_right"] = np.array(judged, dtype=object) == rows["attr_color"].to_numpy()
    rows["heard"] = [c in t for c, t in zip(rows["attr_color"], rows["transcript"], strict=True)]
    print(f"{len(rows)} held-out utterances: speech-made colour {rows['colour_right'].mean():.2f}, "
          f"colour word in the transcript {rows['heard'].mean():.2f}\n")  # fmt: skip
    table = rows.pivot_table("colour_right", "synthesiser", "phrasing", aggfunc="mean")
    print(table.round(2).to_string(), "\n")
    summary = rows.groupby("synthesiser")[["colour_right", "heard"]].mean()
    print(summary.round(2).to_string(), "\n")
    by_heard = rows.groupby("heard")["colour_right"].agg(["mean", "size"])
    print(
        by_heard.round(2).rename(columns={"mean": "colour right", "size": "utterances"}).to_string()
    )
    if args.csv:
        columns = ["utterance_id", "speaker", "phrasing", "caption", "transcript", "heard"]
        rows[[*columns, "colour_right"]].to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()
