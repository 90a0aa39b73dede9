"""ProvenanceHooks: the run and the version every versioned dataset resolves to."""

from __future__ import annotations

from kedro.io import DataCatalog, MemoryDataset, Version
from kedro.pipeline import Node, Pipeline
from transformers import PretrainedConfig

from wavy_pipeline.datasets import JSONDataset
from wavy_pipeline.provenance_hooks import ProvenanceHooks


def test_run_provenance_names_the_run_and_each_datasets_version(tmp_path):
    old = "2026-01-01T00.00.00.000Z"
    JSONDataset(filepath=str(tmp_path / "a.json"), version=Version(None, old)).save({"x": 1})
    JSONDataset(
        filepath=str(tmp_path / "a.json"), version=Version(None, "2025-01-01T00.00.00.000Z")
    ).save({})
    catalog = DataCatalog(
        {
            "a": JSONDataset(filepath=str(tmp_path / "a.json"), version=Version(None, None)),
            "b": JSONDataset(filepath=str(tmp_path / "b.json"), version=Version(None, None)),
            "never_saved": JSONDataset(
                filepath=str(tmp_path / "c.json"), version=Version(None, None)
            ),
            "plain": MemoryDataset(1),
            "run_provenance": MemoryDataset(copy_mode="assign"),
        }
    )
    pipeline = Pipeline([Node(lambda a: a, "a", "b", name="copy")])
    run_params = {"run_id": "2026-12-01T10.00.00.000Z", "env": "base", "pipeline_names": ["x"]}
    ProvenanceHooks().before_pipeline_run(run_params, pipeline, catalog)
    document = catalog.load("run_provenance")
    assert document["datasets"] == {
        "a": old,  # the latest saved version, which the run loads
        "b": "2026-12-01T10.00.00.000Z",  # written by this run: its own version
        "never_saved": None,
    }
    assert document["run"]["session_id"] == "2026-12-01T10.00.00.000Z"
    assert document["run"]["env"] == "base" and document["run"]["pipelines"] == ["x"]
    assert document["run"]["kedro"]


def test_a_transcoded_sibling_of_what_the_run_saves_is_recorded_with_the_runs_version(tmp_path):
    """``m@processor`` reads the folder the run's ``m@ctc`` writes: the record must say the
    run's version (not the previous latest), and resolving it must not pin the old one."""
    from wavy_pipeline.datasets import PretrainedDataset

    run_id = "2026-12-01T10.00.00.000Z"

    def entry():  # as the catalog makes them in a run: saves go to the run's version
        return PretrainedDataset(
            name_or_path=str(tmp_path / "m"),
            class_name="transformers.PretrainedConfig",
            version=Version(None, run_id),
        )

    PretrainedDataset(
        name_or_path=str(tmp_path / "m"),
        class_name="transformers.PretrainedConfig",
        version=Version(None, old := "2025-01-01T00.00.00.000Z"),
    ).save(PretrainedConfig(marker="old"))
    catalog = DataCatalog(
        {"m@ctc": entry(), "m@processor": entry(), "run_provenance": MemoryDataset()}
    )
    pipeline = Pipeline([Node(lambda: None, None, "m@ctc", name="train")])
    ProvenanceHooks().before_pipeline_run({"run_id": run_id}, pipeline, catalog)
    assert catalog.load("run_provenance")["datasets"] == {"m@ctc": run_id, "m@processor": run_id}
    # the sibling resolved the old folder before the save; after it, it loads the new one
    assert catalog.get("m@processor").resolve_load_version() == old
    catalog.get("m@ctc").save(PretrainedConfig(marker="new"))
    assert catalog.load("m@processor").marker == "new"
