"""HuBERT input values of a whole corpus: sharded, memory-mapped, both ways.

:func:`write_hubert_inputs` runs the audio stage's lazy stream into a folder of raw shards
(memory holds one chunk of utterances, whatever the corpus size); :class:`HubertInputs`
reads it back. Plain Python (no Kedro): :class:`~wavy_pipeline.datasets.HubertInputsDataset`
versions and saves it atomically.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from wavy_pipeline.data.corpus import QUARANTINE_COLUMNS

if TYPE_CHECKING:
    from wavy_pipeline.data.audio import HubertInputStream

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
            yield batch_ids, *pad_arrays([self.values(uid) for uid in batch_ids])


def pad_arrays(arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(input_values (B, T) float32, attention_mask (B, T) int64), padded to the longest."""
    width = max(len(a) for a in arrays)
    values = np.zeros((len(arrays), width), dtype=np.float32)
    mask = np.zeros((len(arrays), width), dtype=np.int64)
    for row, array in enumerate(arrays):
        values[row, : len(array)] = array
        mask[row, : len(array)] = 1
    return values, mask


def write_hubert_inputs(
    stream: HubertInputStream, path: Path, *, shard_mb: float = 256, dtype: str = "float32"
) -> None:
    """Run ``stream`` into a new folder ``path``: values appended to raw little-endian shard
    files (``shard-NNNNN.bin``, a new one every ``shard_mb`` MB) as utterances come, with
    ``index.parquet`` (one row per kept utterance), ``quarantine.parquet`` (one per refused
    one, with the reason) and ``meta.json``: what :class:`HubertInputs` reads back."""
    shard_bytes = int(shard_mb * 2**20)
    stored = np.dtype(dtype).newbyteorder("<")
    path.mkdir(parents=True)
    index, quarantine, offset, shard = [], [], 0, 0
    handle = open(path / f"shard-{shard:05d}.bin", "wb")  # noqa: SIM115 - rotated below
    try:
        for item in stream:
            if item.values is None:
                quarantine.append(
                    ["audio", "utterance", item.source, pd.NA, item.utterance_id, item.reason]
                )
                continue
            if offset and (offset + len(item.values)) * stored.itemsize > shard_bytes:
                handle.close()
                shard, offset = shard + 1, 0
                handle = open(path / f"shard-{shard:05d}.bin", "wb")  # noqa: SIM115
            item.values.astype(stored).tofile(handle)
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
    meta = stream.meta | {"dtype": stored.str, "n_utterances": len(index), "n_shards": shard + 1}
    (path / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
