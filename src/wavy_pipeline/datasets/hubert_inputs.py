"""The Kedro dataset of :mod:`wavy_pipeline.core.hubert_inputs` (the audio stage's output)."""

from __future__ import annotations

from pathlib import Path

from wavy_pipeline.core.hubert_inputs import HubertInputs, write_hubert_inputs
from wavy_pipeline.data.audio import HubertInputStream
from wavy_pipeline.datasets._atomic import AtomicVersionedDataset


class HubertInputsDataset(AtomicVersionedDataset[HubertInputStream, HubertInputs]):
    """Saves a :class:`HubertInputStream` by running it, shard by shard, into a folder.

    Values are appended to raw little-endian shard files (``shard-NNNNN.bin``, a new one
    every ``save_args.shard_mb``, default 256 MB) as utterances come, so memory holds one
    chunk of utterances whatever the corpus size. The folder appears under its final name
    only once complete.

    Example:
        ```yaml
        hubert_inputs:
          type: wavy_pipeline.datasets.HubertInputsDataset
          filepath: data/03_primary/hubert_inputs
          versioned: true
          save_args: {shard_mb: 256, dtype: float32}
        ```
    """

    def _read(self, path: Path) -> HubertInputs:
        return HubertInputs(path)

    def _write(self, data: HubertInputStream, path: Path) -> None:
        write_hubert_inputs(
            data,
            path,
            shard_mb=self._save_args.get("shard_mb", 256),
            dtype=self._save_args.get("dtype", "float32"),
        )
