"""Which rows of ``prompt_embeds`` the diffusion stand-in reads a caption's position from.

With the models of the latest default run, draws every dev and test caption that states a
position (the demo corpus: 26) with several seeds, from five conditionings:

- ``speech``: the adapter's ``prompt_embeds`` of the utterance (what `generation` draws);
- ``text``: the diffusion text encoder's of the caption;
- ``speech words + text tail``: the speech rows before the caption's EOS, the text rows from
  the EOS on (the EOS state and the padding states after it, which SD attends to as well);
- ``text words + speech tail``: the other way round;
- ``text words, EOS + speech tail``: the text rows before the EOS, the speech rows from it on,

and prints how often the attribute judge reads the stated position back. If the position
comes back with the text's tail and is lost with the speech's, it is the tail the adapter
must get right (``speech_adapter.model.tail_weight``, README "Speech adapter").

Usage (after a default ``kedro run`` in the project folder)::

    .venv/bin/python scripts/diagnose_prompt_rows.py [--seeds 3] [--splits dev test]
        [--adapter-version 2026-12-04T22.39.49.444Z]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from wavy_pipeline.adapter.distillation import caption_eos_rows
from wavy_pipeline.generation.generate import utterance_seed
from wavy_pipeline.metrics.retrieval import attributes_named

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling scripts
from latest_models import drawing, load_latest  # noqa: E402


def main() -> None:
    """Parse arguments, draw, print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--splits", nargs="+", default=["dev", "test"])
    parser.add_argument(
        "--adapter-version", default=None, help="a speech_adapter version (default: latest)"
    )
    args = parser.parse_args()
    loaded, params = load_latest(
        {
            "diffusion@pipeline": None,
            "speech_adapter": args.adapter_version,
            "speech_features": None,
            "utterances": None,
        }
    )
    pipe, adapter, speech, utterances = loaded.values()
    adapter.eval()
    vocabulary = params["evaluation"]["attribute_vocabulary"]
    judge, options = drawing(pipe, params)
    rows = utterances[
        utterances["split"].isin(args.splits)
        & utterances["utterance_id"].isin(speech.keys)
        & np.array(["position" in attributes_named(c, vocabulary) for c in utterances["caption"]])
    ].reset_index(drop=True)
    if rows.empty:
        raise SystemExit(f"no {'/'.join(args.splits)} caption states a position")
    ids, captions = rows["utterance_id"].tolist(), rows["caption"].tolist()
    with torch.inference_mode():
        by_speech = adapter(torch.from_numpy(np.asarray(speech.take("layers", ids), np.float32)))
        by_text, _ = pipe.encode_prompt(captions, "cpu", 1, False)
    eos = caption_eos_rows(pipe.tokenizer, captions, by_text.shape[1])
    tail = (
        torch.arange(by_text.shape[1])[None, :, None]
        >= torch.tensor([eos[c] for c in captions])[:, None, None]
    )
    after_eos = (
        torch.arange(by_text.shape[1])[None, :, None]
        > torch.tensor([eos[c] for c in captions])[:, None, None]
    )
    conditions = {
        "speech": by_speech,
        "text": by_text,
        "speech words + text tail": torch.where(tail, by_text, by_speech),
        "text words + speech tail": torch.where(tail, by_speech, by_text),
        "text words and EOS + speech padding": torch.where(after_eos, by_speech, by_text),
    }
    print(f"{len(rows)} {'/'.join(args.splits)} captions that state a position, "
          f"{args.seeds} seeds each\n")  # fmt: skip
    print("| conditioning | position read back | per seed |\n|---|---|---|")
    for name, embeds in conditions.items():
        per_seed = []
        for k in range(args.seeds):
            seeds = [utterance_seed(params["seed"] + k, u) for u in ids]
            generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
            with torch.inference_mode():
                images = pipe(prompt_embeds=embeds, generator=generators, **options).images
            said = rows["attr_position"].tolist()
            per_seed.append(np.mean([judge(im)["position"] == p for im, p in zip(images, said)]))
        print(f"| {name} | {np.mean(per_seed):.2f} | {' / '.join(f'{x:.2f}' for x in per_seed)} |")


if __name__ == "__main__":
    main()
