"""``scripts/gpu_check.sh`` runs end to end (at reduced size, on the CPU) and prints its table.

On a lent GPU the same command runs the paper's configuration; here ``--device cpu --tiny``
checks the script, the stages' code paths and the FLOP counting in well under a minute.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_at_reduced_size_on_cpu(tmp_path, run_ok):
    out = tmp_path / "gpu_check.json"
    env = os.environ | {"PYTHON": sys.executable, "OMP_WAIT_POLICY": "PASSIVE"}
    done = run_ok(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--device", "cpu", "--tiny"]
        + ["--json", str(out)],
        cwd=ROOT,
        env=env,
    )
    lines = done.stdout.splitlines()
    header = "| stage | workload | measured | FLOP-count limit | of limit | FLOPs per item |"
    assert any(line.startswith(header) for line in lines), done.stdout
    rows = {line.split("|")[1].strip(): line for line in lines if line.startswith("| ")}
    assert {"matmul", "hubert", "projector", "generation"} <= set(rows)
    assert "s of audio/s" in rows["hubert"] and "image/s" in rows["generation"]

    results = {r["stage"]: r for r in json.loads(out.read_text())["results"]}
    assert results["matmul"]["ceiling_tflops"] > 0
    for stage in ("hubert", "projector", "generation"):
        result = results[stage]
        assert result["rate"] > 0 and result["flops_per_item"] > 0
        # a FLOP-count limit is an upper bound; 2x slack for a noisy, shared CPU ceiling
        assert result["rate"] < 2 * result["limit"], result
