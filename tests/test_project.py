"""The project as users meet it: registry, configuration, kedro-viz's view of the DAG."""

from __future__ import annotations

from pathlib import Path

import pytest
from kedro.framework.project import configure_project, pipelines
from kedro.framework.startup import bootstrap_project

PROJECT_ROOT = Path(__file__).resolve().parents[1]
EXPECTED = {
    "ingestion",
    "audio",
    "foundation",
    "features",
    "speechclip",
    "generation",
    "evaluation",
    "heldout",
}


def test_registry_has_every_pipeline_and_default_skips_foundation():
    bootstrap_project(PROJECT_ROOT)
    configure_project("wavy_pipeline")
    assert EXPECTED <= set(pipelines)
    default = {n.name for n in pipelines["__default__"].nodes}
    assert "train_speech_encoder" not in default
    assert {"ingest_corpus", "preprocess_audio", "train_speechclip"} <= default
    # the held-out evaluation is part of every default run, on the models the run trains
    assert {"heldout.ingest_corpus", "heldout.score_generated_images"} <= default
    heldout = pipelines["heldout"]
    assert {"speechclip_model", "speech_adapter", "diffusion@pipeline"} <= heldout.inputs()
    assert not any(n.name.startswith("train_") for n in heldout.nodes)
    # foundation brings the data pipelines it needs, also on the generated foundation corpus
    foundation = pipelines["foundation"]
    assert {
        "ingest_corpus",
        "preprocess_audio",
        "foundation_corpus.preprocess_audio",
        "train_speech_encoder",
    } <= {n.name for n in foundation.nodes}
    assert "foundation_corpus.hubert_inputs" in foundation.all_outputs()
    assert not any(n.name.startswith("foundation_corpus.") for n in pipelines["__default__"].nodes)


def test_kedro_viz_data_layer_sees_every_pipeline_with_layers():
    from kedro_viz.data_access import data_access_manager
    from kedro_viz.server import load_and_populate_data

    load_and_populate_data(PROJECT_ROOT)
    registered = set(data_access_manager.registered_pipelines.get_pipeline_ids())
    assert EXPECTED | {"__default__"} <= registered
    layers = data_access_manager.get_sorted_layers_for_registered_pipeline("__default__")
    expected_order = ["raw", "intermediate", "primary", "feature", "models", "reporting"]
    assert [layer for layer in layers if layer in expected_order] == expected_order
    assert layers.index("encoders") < layers.index("feature")
    nodes = data_access_manager.nodes.as_list()
    names = {n.name for n in nodes}
    assert {"ingest_corpus", "preprocess_audio", "train_speechclip", "retrieval_metrics"} <= names


def test_foundation_corpus_resolves_and_says_how_to_make_it(tmp_path):
    """Every dataset of the foundation pipeline is a catalog entry (those of the foundation
    corpus under its own root and folders, persisted ones versioned); a corpus that was never
    generated is refused with the command that makes it."""
    from kedro.config import OmegaConfigLoader
    from kedro.io import DataCatalog, DatasetError

    bootstrap_project(PROJECT_ROOT)
    configure_project("wavy_pipeline")
    loader = OmegaConfigLoader(
        str(PROJECT_ROOT / "conf"),
        base_env="base",
        default_run_env="local",
        runtime_params={"foundation_corpus_root": str(tmp_path / "none")},
    )
    conf, params = loader["catalog"], loader["parameters"]
    catalog = DataCatalog.from_config(conf)
    foundation = pipelines["foundation"]
    for name in foundation.inputs() | foundation.all_outputs():
        if name.startswith("params:"):
            assert name.removeprefix("params:").split(".")[0] in params, name
        else:
            assert name in catalog, name
    assert params["foundation_corpus_root"] == str(tmp_path / "none")
    assert conf["foundation_corpus.hubert_inputs"]["versioned"] is True
    assert "foundation_corpus" in conf["foundation_corpus.utterances"]["filepath"]
    with pytest.raises(DatasetError, match="run `make foundation-corpus`"):
        catalog.load("foundation_corpus.raw_wav2capt")
