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
import sys
from pathlib import Path

import numpy as np
import torch

from wavy_pipeline.generation.generate import utterance_seed
from wavy_pipeline.models.foundation_hubert import transcribe

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling scripts
from latest_models import drawing, load_latest  # noqa: E402


def main() -> None:
    """Parse arguments, draw, transcribe, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    loaded, params = load_latest(
        {
            "diffusion@pipeline": None,
            "speech_encoder@processor": None,
            "speech_encoder@ctc": None,
            "speech_adapter": None,
            "heldout.speech_features": None,
            "heldout.utterances": None,
            "heldout.hubert_inputs": None,
        }
    )
    pipe, processor, ctc, adapter, speech, utterances, inputs = loaded.values()
    adapter.eval()
    judge, options = drawing(pipe, params)
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
