"""Does the diffusion stand-in draw what a caption says about size and position?

Draws every colour x shape x size x position of the demo grammar, written out in full
("a big red circle on the left", with the words of ``scripts/make_spoken_shapes.py``), with
several seeds, at several guidance scales, and
prints the attribute judge's accuracy per attribute and a confusion table of position
(rows: said, columns: drawn). With the same seeds for every caption, a model that ignores
position draws each seed's shape in the same place whatever the caption says.

Usage::

    .venv/bin/python scripts/diagnose_position.py [--model DIR] [--seeds 4] [--guidance 6 12]

``--model`` defaults to the latest version of ``data/06_models/diffusion``.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import pandas as pd
from diffusers import StableDiffusionPipeline
from kedro.config import OmegaConfigLoader

from wavy_pipeline.generation.generate import text_images
from wavy_pipeline.metrics.attribute_judge import AttributeJudge

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from make_spoken_shapes import COLORS, POSITION_PHRASES, SHAPES, SIZE_WORDS  # noqa: E402


def latest_model() -> Path:
    versions = sorted((ROOT / "data" / "06_models" / "diffusion").glob("*/diffusion"))
    if not versions:
        raise SystemExit("no data/06_models/diffusion/<version>/diffusion: run `kedro run` first")
    return versions[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--guidance", type=float, nargs="+", default=[6.0, 12.0])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    params = OmegaConfigLoader(str(ROOT / "conf"), base_env="base", default_run_env="local")[
        "parameters"
    ]
    judge = AttributeJudge(
        palette={k: tuple(v) for k, v in params["evaluation"]["palette"].items()}
    )
    model = args.model or latest_model()
    pipe = StableDiffusionPipeline.from_pretrained(str(model))
    pipe.set_progress_bar_config(disable=True)
    rows = []
    for color, shape, size, position in itertools.product(
        COLORS, SHAPES, SIZE_WORDS, POSITION_PHRASES
    ):
        truth = {"color": color, "shape": shape, "size": size, "position": position}
        caption = f"a {SIZE_WORDS[size][1]} {color} {shape} {POSITION_PHRASES[position]}"
        rows += [{**truth, "caption": caption, "seed": s} for s in range(args.seeds)]
    table = pd.DataFrame(rows)
    print(f"model: {model}\n{len(table)} captions x seeds per guidance scale\n")
    for guidance in args.guidance:
        made = text_images(
            pipe,
            table["caption"].tolist(),
            table["seed"].tolist(),
            steps=args.steps,
            guidance_scale=guidance,
            batch_size=32,
        )
        judged = pd.DataFrame([judge(image) for image in made])
        accuracy = {a: float((judged[a] == table[a]).mean()) for a in truth}
        print(f"## guidance {guidance:g}\n")
        print("| " + " | ".join(accuracy) + " |\n|" + "---|" * len(accuracy))
        print("| " + " | ".join(f"{v:.2f}" for v in accuracy.values()) + " |\n")
        confusion = pd.crosstab(table["position"], judged["position"].fillna("none"))
        print("position said (rows) / drawn (columns):\n")
        print(confusion.to_string() + "\n")


if __name__ == "__main__":
    main()
