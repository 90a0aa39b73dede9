"""Experiment tracking: kedro-mlflow + wavy_pipeline.tracking log parameters, training
curves, metrics and the report of a run to MLflow (a throw-away store, see conftest)."""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from kedro.config import OmegaConfigLoader
from kedro.framework.hooks.manager import _create_hook_manager
from kedro.io import DataCatalog
from kedro.pipeline import Node, Pipeline
from kedro.runner import SequentialRunner

from wavy_pipeline import settings, tracking
from wavy_pipeline.tracking import TrackingHooks, flatten_numbers, history_metrics, metric_name

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TRACKING_EXTRA = (
    "the `tracking` extra (kedro-mlflow) is not installed: pip install -e '.[tracking]'"
)


def latest(folder: Path) -> Path:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))[-1] / folder.name


def test_metric_names_and_history_curves():
    assert metric_name("retrieval_metrics", "speech_to_image.R@1") == (
        "retrieval_metrics/speech_to_image.R_at_1"
    )
    assert metric_name("a b", "c(d)") == "a b/c_d_"
    history = pd.DataFrame(
        {"step": [5, 10, 15], "loss": [3.0, 2.0, 1.5], "R@1": [0.1, None, 0.4], "stage": "x"}
    )
    assert history_metrics("speechclip_history", history) == [
        ("speechclip_history/loss", 3.0, 5),
        ("speechclip_history/loss", 2.0, 10),
        ("speechclip_history/loss", 1.5, 15),
        ("speechclip_history/R_at_1", 0.1, 5),
        ("speechclip_history/R_at_1", 0.4, 15),
    ]
    assert dict(flatten_numbers({"a": {"b": 1, "c": [2, 3]}, "d": "x"})) == {
        "a.b": 1,
        "a.c.0": 2,
        "a.c.1": 3,
        "d": "x",
    }


def tracked_outputs(root: Path, hooks: TrackingHooks | None) -> dict:
    """Run a two-node pipeline whose outputs the hooks log when MLflow is there (a training
    history and a reporting-layer JSON, versioned, as in the project's catalog) with
    ``hooks`` registered (or none), in ``root``; return what it saved."""
    catalog = DataCatalog.from_config(
        {
            "speechclip_history": {
                "type": "wavy_pipeline.datasets.ParquetTableDataset",
                "filepath": str(root / "speechclip_history.parquet"),
                "versioned": True,
            },
            "retrieval_metrics": {
                "type": "wavy_pipeline.datasets.JSONDataset",
                "filepath": str(root / "retrieval_metrics.json"),
                "versioned": True,
                "metadata": {"kedro-viz": {"layer": "reporting"}},
            },
        }
    )
    catalog["params:steps"] = 3

    def train(steps: int) -> pd.DataFrame:
        return pd.DataFrame({"step": range(1, steps + 1), "loss": [3.0, 2.0, 1.5][:steps]})

    def evaluate(history: pd.DataFrame) -> dict:
        return {"speech_to_image": {"R@1": 1 / len(history)}, "clip_model": "tiny"}

    pipeline = Pipeline(
        [
            Node(train, "params:steps", "speechclip_history", name="train"),
            Node(evaluate, "speechclip_history", "retrieval_metrics", name="evaluate"),
        ]
    )
    manager = None
    if hooks is not None:
        manager = _create_hook_manager()
        manager.register(hooks)
        hooks.after_catalog_created(catalog=catalog)  # as the Kedro context calls it
    SequentialRunner().run(pipeline, catalog, manager)
    return {
        "speechclip_history": catalog.load("speechclip_history").to_dict("list"),
        "retrieval_metrics": catalog.load("retrieval_metrics"),
    }


def test_without_mlflow_the_hooks_do_nothing(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` raises ImportError
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # where MLflow would put mlruns/ or mlflow.db by default
    asked = []  # the hooks ran: each saved dataset asked for the active MLflow run
    active_run_id = tracking._active_run_id

    def spy() -> str | None:
        asked.append(active_run_id())
        return asked[-1]

    monkeypatch.setattr(tracking, "_active_run_id", spy)
    with caplog.at_level(logging.INFO, logger=tracking.__name__):
        tracked = tracked_outputs(tmp_path / "tracked", TrackingHooks())
    assert asked == [None, None]  # speechclip_history, retrieval_metrics: no run to log to
    said = [r.getMessage() for r in caplog.records if r.name == tracking.__name__]
    assert not said  # nothing logged, not even a warning of a failed attempt
    assert not [p for p in tmp_path.rglob("*") if "mlruns" in p.name or "mlflow" in p.name]
    # the run's outputs are those of a run without the hooks
    assert tracked == tracked_outputs(tmp_path / "plain", None)
    assert tracked["retrieval_metrics"] == {
        "speech_to_image": {"R@1": pytest.approx(1 / 3)},
        "clip_model": "tiny",
    }


def mlflow_config(conf: Path) -> dict:
    loader = OmegaConfigLoader(str(conf), **settings.CONFIG_LOADER_ARGS)
    loader.config_patterns["mlflow"] = ["mlflow*", "mlflow*/**", "**/mlflow*"]  # as kedro-mlflow
    return loader["mlflow"]


def test_the_tracking_uri_is_local_by_default_and_switches_to_a_server(tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    (conf / "base").mkdir(parents=True)
    (conf / "local").mkdir()
    (conf / "base" / "mlflow.yml").write_text(
        (PROJECT_ROOT / "conf" / "base" / "mlflow.yml").read_text()
    )
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert mlflow_config(conf)["server"]["mlflow_tracking_uri"] == "sqlite:///mlflow.db"

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert mlflow_config(conf)["server"]["mlflow_tracking_uri"] == "http://mlflow.internal:5000"

    (conf / "local" / "mlflow.yml").write_text(
        "server:\n  mlflow_tracking_uri: https://tracking.example.org\n"
    )
    config = mlflow_config(conf)
    assert config["server"]["mlflow_tracking_uri"] == "https://tracking.example.org"
    assert config["server"]["credentials"] is None  # the rest of base is kept (soft merge)
    assert config["tracking"]["experiment"]["name"] == "wavy_pipeline"


@pytest.mark.slow
def test_a_run_logs_parameters_curves_metrics_and_the_report(demo_outputs, mlflow_store, require):
    require(importlib.util.find_spec("kedro_mlflow") is not None, TRACKING_EXTRA)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_store)
    experiment = client.get_experiment_by_name("wavy_pipeline")
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.project_path = '{demo_outputs}'"
    )
    # one MLflow run per `kedro run`, each closed when its session ends
    assert runs and {r.info.status for r in runs} == {"FINISHED"}
    # the full default run (tests/test_end_to_end.py also runs slices and `--from-nodes`)
    run = next(
        r
        for r in runs
        if r.info.run_name == "__default__" and "speechclip_history/loss" in r.data.metrics
    )
    run_id = run.info.run_id

    # parameters: every `params:` input of every node, flattened
    params = run.data.params
    assert params["seed"] == "0"
    conf = demo_outputs / "conf" / "base"
    generation = yaml.safe_load((conf / "parameters_generation.yml").read_text())["generation"]
    adapter = yaml.safe_load((conf / "parameters_adapter.yml").read_text())["speech_adapter"]
    assert params["generation.steps"] == str(generation["steps"])
    assert params["speech_adapter.model.n_queries"] == str(adapter["model"]["n_queries"])
    assert "speechclip.train.lr" in params and "audio.sampling_rate" in params

    # training curves: one metric value per row and step of the history tables
    history = pd.read_parquet(
        latest(demo_outputs / "data/07_model_output/speechclip_history.parquet")
    )
    curve = client.get_metric_history(run_id, "speechclip_history/loss")
    assert len(curve) > 5
    logged = sorted((m.step, m.value) for m in curve)
    saved = sorted(zip(history["step"].tolist(), history["loss"].tolist(), strict=True))
    assert [step for step, _ in logged] == [step for step, _ in saved]
    assert [value for _, value in logged] == pytest.approx([value for _, value in saved])
    assert len(client.get_metric_history(run_id, "adapter_history/loss")) > 5

    # metrics files: every number as a metric, strings as tags, the files as artifacts
    artifacts = Path(client.download_artifacts(run_id, "", str(demo_outputs / "downloaded")))
    retrieval = json.loads((artifacts / "retrieval_metrics" / "retrieval_metrics.json").read_text())
    evaluation = json.loads(
        (artifacts / "evaluation_metrics" / "evaluation_metrics.json").read_text()
    )
    metrics = run.data.metrics
    assert metrics["retrieval_metrics/speech_to_image.R_at_1"] == pytest.approx(
        retrieval["speech_to_image"]["R@1"]
    )
    assert metrics[
        "retrieval_metrics/unseen_voice.speech_to_image_attribute_R_at_1"
    ] == pytest.approx(retrieval["unseen_voice"]["speech_to_image_attribute_R@1"])
    for condition in ("speech", "text", "ground_truth"):
        assert metrics[f"evaluation_metrics/clip_score.{condition}"] == pytest.approx(
            evaluation["clip_score"][condition]
        )
    assert run.data.tags["evaluation_metrics/clip_model"] == evaluation["clip_model"]

    # the report and figures
    assert {"report.md", "grid.png", "scores.png"} <= {
        p.name for p in (artifacts / "evaluation_report").iterdir()
    }
    assert (artifacts / "speechclip_training_plot" / "speechclip_training.png").stat().st_size > 0
