"""HuBERT input values of a whole corpus: sharded, memory-mapped, versioned, atomic."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from wavy_pipeline.data.audio import HubertInputStream
from wavy_pipeline.data.corpus import QUARANTINE_COLUMNS
from wavy_pipeline.datasets._atomic import AtomicVersionedDataset

INDEX_COLUMNS = [
    "utterance_id",
    "shard",
    "offset",
    "length",
    "source_rate",
    "source_seconds",
    "cropped",
]


class HubertInputs:
    """Read side: normalised 16 kHz input values per utterance, memory-mapped.

    ``index`` has one row per valid utterance; ``quarantine`` one per refused one.
    Nothing is read into memory until asked for, so opening the real corpus is free.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.meta = json.loads((self.path / "meta.json").read_text())
        self.index = pd.read_parquet(self.path / "index.parquet")
        self.quarantine = pd.read_parquet(self.path / "quarantine.parquet")
        self._row = {uid: i for i, uid in enumerate(self.index["utterance_id"])}
        self._shards: dict[int, np.ndarray] = {}

    @property
    def sampling_rate(self) -> int:
        return int(self.meta["sampling_rate"])

    @property
    def ids(self) -> list[str]:
        return self.index["utterance_id"].tolist()

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, utterance_id: str) -> bool:
        return utterance_id in self._row

    def _shard(self, shard: int) -> np.ndarray:
        if shard not in self._shards:
            file = self.path / f"shard-{shard:05d}.bin"
            self._shards[shard] = np.memmap(file, dtype=self.meta["dtype"], mode="r")
        return self._shards[shard]

    def values(self, utterance_id: str) -> np.ndarray:
        """The input values of one utterance (float32, 1-D)."""
        row = self.index.iloc[self._row[utterance_id]]
        flat = self._shard(int(row["shard"]))
        return np.asarray(flat[row["offset"] : row["offset"] + row["length"]], dtype=np.float32)

    def batches(
        self, ids: Iterable[str] | None = None, batch_size: int = 8
    ) -> Iterator[tuple[list[str], np.ndarray, np.ndarray]]:
        """Yield (ids, input_values (B, T), attention_mask (B, T)) padded to the longest."""
        ids = list(self.ids if ids is None else ids)
        for start in range(0, len(ids), batch_size):
            batch_ids = ids[start : start + batch_size]
            arrays = [self.values(uid) for uid in batch_ids]
            width = max(len(a) for a in arrays)
            values = np.zeros((len(arrays), width), dtype=np.float32)
            mask = np.zeros((len(arrays), width), dtype=np.int64)
            for row, array in enumerate(arrays):
                values[row, : len(array)] = array
                mask[row, : len(array)] = 1
            yield batch_ids, values, mask


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
        shard_bytes = int(self._save_args.get("shard_mb", 256) * 2**20)
        dtype = np.dtype(self._save_args.get("dtype", "float32")).newbyteorder("<")
        path.mkdir(parents=True)
        index, quarantine, offset, shard = [], [], 0, 0
        handle = open(path / f"shard-{shard:05d}.bin", "wb")  # noqa: SIM115 - rotated below
        try:
            for item in data:
                if item.values is None:
                    quarantine.append(
                        ["audio", "utterance", item.source, pd.NA, item.utterance_id, item.reason]
                    )
                    continue
                if offset and (offset + len(item.values)) * dtype.itemsize > shard_bytes:
                    handle.close()
                    shard, offset = shard + 1, 0
                    handle = open(path / f"shard-{shard:05d}.bin", "wb")  # noqa: SIM115
                item.values.astype(dtype).tofile(handle)
                index.append(
                    [
                        item.utterance_id,
                        shard,
                        offset,
                        len(item.values),
                        item.source_rate,
                        item.source_seconds,
                        item.cropped,
                    ]
                )
                offset += len(item.values)
        finally:
            handle.close()
        pd.DataFrame(index, columns=INDEX_COLUMNS).to_parquet(path / "index.parquet", index=False)
        frame = pd.DataFrame(quarantine, columns=QUARANTINE_COLUMNS).astype({"line_no": "Int64"})
        frame.to_parquet(path / "quarantine.parquet", index=False)
        meta = data.meta | {"dtype": dtype.str, "n_utterances": len(index), "n_shards": shard + 1}
        (path / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
