"""Custom datasets: versioning, atomic saves, raw readers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from kedro.io.core import DatasetError, Version
from transformers import AutoFeatureExtractor

from wavy_pipeline.data.audio import Audio, AudioPolicy, HubertInputStream
from wavy_pipeline.datasets import (
    AudioDataset,
    HubertInputsDataset,
    JSONDataset,
    ParquetTableDataset,
    PretrainedDataset,
    TextLinesDataset,
)


def versioned(cls, path: Path, save: str | None = None, **kwargs):
    return cls(filepath=str(path), version=Version(None, save), **kwargs)


def test_two_saves_make_two_versions_and_lose_nothing(tmp_path):
    path = tmp_path / "table.parquet"
    versioned(ParquetTableDataset, path, "2026-01-01T00.00.00.000Z").save(pd.DataFrame({"a": [1]}))
    versioned(ParquetTableDataset, path, "2026-01-02T00.00.00.000Z").save(pd.DataFrame({"a": [2]}))
    latest = versioned(ParquetTableDataset, path)
    assert latest.load()["a"].tolist() == [2]
    assert latest.list_versions(full_path=False) == [
        "2026-01-02T00.00.00.000Z",
        "2026-01-01T00.00.00.000Z",
    ]
    old = ParquetTableDataset(filepath=str(path), version=Version("2026-01-01T00.00.00.000Z", None))
    assert old.load()["a"].tolist() == [1]


class Boom(Exception):
    pass


def test_a_save_killed_half_way_leaves_no_loadable_partial_version(tmp_path):
    path = tmp_path / "doc.json"
    versioned(JSONDataset, path, "2026-01-01T00.00.00.000Z").save({"ok": 1})

    class Exploding(JSONDataset):
        def _write(self, data, target):
            target.write_text('{"partial": ')  # the first bytes reach the disk …
            raise Boom  # … and the process dies before the rename

    with pytest.raises(DatasetError):
        versioned(Exploding, path, "2026-01-02T00.00.00.000Z").save({"new": 2})
    latest = versioned(JSONDataset, path)
    assert latest.load() == {"ok": 1}
    assert latest.list_versions(full_path=False) == ["2026-01-01T00.00.00.000Z"]


def test_unversioned_folder_is_replaced_only_when_complete(tmp_path):
    dataset = JSONDataset(filepath=str(tmp_path / "m.json"))
    dataset.save({"v": 1})
    dataset.save({"v": 2})
    assert dataset.load() == {"v": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_remote_paths_are_refused_with_a_reason():
    with pytest.raises(DatasetError, match="local paths only"):
        JSONDataset(filepath="s3://bucket/m.json")


def test_text_lines_keep_bad_bytes_for_the_parser(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(b"\xef\xbb\xbfa.jpg#0\tok\r\nb.jpg#0\tcaf\xe9\n")
    lines = TextLinesDataset(filepath=str(path)).load()
    assert lines == ["a.jpg#0\tok", "b.jpg#0\tcaf\udce9"]
    assert TextLinesDataset(filepath=str(tmp_path / "none"), optional=True).load() == []
    with pytest.raises(DatasetError, match="corpus_root"):
        TextLinesDataset(filepath=str(tmp_path / "none")).load()
    hint = "run `make foundation-corpus`"
    with pytest.raises(DatasetError, match=f"none' does not exist. {hint}"):
        TextLinesDataset(filepath=str(tmp_path / "none"), missing_hint=hint).load()


def test_audio_dataset_reads_and_refuses(tmp_path):
    good = tmp_path / "good.wav"
    sf.write(good, np.zeros((2205, 2), np.float32) + 0.1, 22050)
    audio = AudioDataset(filepath=str(good)).load()
    assert audio.sample_rate == 22050 and audio.samples.shape == (2205, 2)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really")
    with pytest.raises(DatasetError, match="unreadable audio"):
        AudioDataset(filepath=str(corrupt)).load()
    with pytest.raises(DatasetError, match="more than max_seconds=0.05"):
        AudioDataset(filepath=str(good), max_seconds=0.05).load()


def test_hubert_inputs_round_trip_with_several_shards(tmp_path):
    extractor = AutoFeatureExtractor.from_pretrained("data/01_raw/models/hubert-large-ls960-ft")
    rng = np.random.default_rng(0)
    clips = {
        f"k{i}": rng.standard_normal((4000 + 1000 * i, 1)).astype(np.float32) for i in range(5)
    }
    audio = {key: (lambda c=clip: Audio(c, 16000)) for key, clip in clips.items()}
    audio["k2"] = lambda: Audio(np.zeros((4000, 1), np.float32), 16000)  # silent
    ids = [f"u{i}" for i in range(5)]
    stream = HubertInputStream(ids, list(clips), audio, extractor, AudioPolicy(chunk_size=2))
    dataset = versioned(
        HubertInputsDataset, tmp_path / "inputs", save_args={"shard_mb": 0.02}
    )  # ~20 kB shards: forces several
    dataset.save(stream)
    loaded = versioned(HubertInputsDataset, tmp_path / "inputs").load()
    assert loaded.ids == ["u0", "u1", "u3", "u4"]
    assert loaded.meta["n_shards"] > 1
    assert loaded.quarantine[["key", "reason"]].values.tolist() == [
        ["u2", "silent (peak 0 after removing DC, below silence_peak=0.0001)"]
    ]
    expected = (clips["k3"][:, 0] - clips["k3"].mean()) / np.sqrt(clips["k3"].var() + 1e-7)
    np.testing.assert_allclose(loaded.values("u3"), expected, atol=1e-5)
    batch_ids, values, mask = next(loaded.batches(["u0", "u4"], batch_size=2))
    assert values.shape == (2, 8000) and mask.sum(axis=1).tolist() == [4000, 8000]
    assert (values[0, 4000:] == 0).all()


def test_pretrained_dataset_local_folder_and_clear_error(tmp_path):
    dataset = PretrainedDataset(
        name_or_path="data/01_raw/models/hubert-large-ls960-ft",
        class_name="transformers.AutoFeatureExtractor",
    )
    assert dataset.load().sampling_rate == 16000
    saved = PretrainedDataset(
        name_or_path=str(tmp_path / "fe"),
        class_name="transformers.AutoFeatureExtractor",
        version=Version(None, None),
    )
    saved.save(dataset.load())
    assert saved.load().do_normalize is True
    missing = PretrainedDataset(
        name_or_path=str(tmp_path / "nowhere"), class_name="transformers.AutoFeatureExtractor"
    )
    with pytest.raises(DatasetError, match="not a local folder"):
        missing.load()


def test_pretrained_dataset_stores_the_named_weights_in_half_precision(tmp_path):
    """`half_precision` halves the named float32 weights on disk; loading gives a float32
    model whose values are those weights rounded to float16, the others untouched."""
    import torch
    from safetensors import safe_open
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    model = CLIPTextModel(
        CLIPTextConfig(vocab_size=1000, hidden_size=16, intermediate_size=32,
                       num_hidden_layers=1, num_attention_heads=2)
    )  # fmt: skip
    dataset = PretrainedDataset(
        name_or_path=str(tmp_path / "te"),
        class_name="transformers.CLIPTextModel",
        half_precision=["*token_embedding.weight"],
        version=Version(None, None),
    )
    dataset.save(model)
    (file,) = (tmp_path / "te").rglob("model.safetensors")
    with safe_open(str(file), framework="pt") as f:
        dtypes = {name: f.get_slice(name).get_dtype() for name in f.keys()}  # noqa: SIM118
    assert dtypes["embeddings.token_embedding.weight"] == "F16"
    assert {d for n, d in dtypes.items() if "token_embedding" not in n} == {"F32"}
    loaded = dataset.load()
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    before, after = model.state_dict(), loaded.state_dict()
    table = "embeddings.token_embedding.weight"
    assert torch.equal(after[table], before[table].half().float())
    assert not torch.equal(after[table], before[table])  # it was rounded
    assert torch.equal(after["embeddings.position_embedding.weight"],
                       before["embeddings.position_embedding.weight"])  # fmt: skip
