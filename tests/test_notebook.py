"""notebooks/wavy_results.ipynb runs headless (nbclient + ipykernel) against the latest
run of a throw-away copy of the project, so it never rots."""

from __future__ import annotations

import base64
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "wavy_results.ipynb"


def test_the_notebook_is_stored_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code
    assert all(not cell.outputs and cell.execution_count is None for cell in code), (
        "clear the outputs before committing: jupyter nbconvert --clear-output --inplace "
        f"{NOTEBOOK.relative_to(NOTEBOOK.parents[1])}"
    )


@pytest.mark.slow
def test_the_results_notebook_runs_on_the_latest_run(demo_outputs, tmp_path, monkeypatch):
    monkeypatch.setenv("WAVY_PROJECT", str(demo_outputs))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError, with the cell's traceback, on any error
    nbformat.write(notebook, tmp_path / "wavy_results.executed.ipynb")  # kept for a look

    outputs = [output for cell in notebook.cells for output in cell.get("outputs", [])]
    figures = [o["data"]["image/png"] for o in outputs if "image/png" in o.get("data", {})]
    for number, figure in enumerate(figures):
        (tmp_path / f"figure_{number}.png").write_bytes(base64.b64decode(figure))
    # the image grid, retrieval, CLIP score and training curves
    assert len(figures) >= 4
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "generated images of 18 test images" in text
    tables = "".join(o["data"].get("text/html", "") for o in outputs if "data" in o)
    assert "speech → image" in tables and "ground_truth" in tables
