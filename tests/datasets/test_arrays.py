"""ArrayStoreDataset round trip and the content digest that guards checkpoint resumes."""

from __future__ import annotations

import numpy as np

from wavy_pipeline.core.arrays import ArrayStream
from wavy_pipeline.datasets.arrays import ArrayStoreDataset


def save(path, values: np.ndarray, keys: list[str]):
    stream = ArrayStream(
        keys=keys,
        specs={"x": (values.shape[1:], str(values.dtype))},
        blocks=[(0, {"x": values})],
        meta={"model": "same name"},
    )
    dataset = ArrayStoreDataset(filepath=str(path))
    dataset.save(stream)
    return dataset.load()


def test_round_trip_and_digest(tmp_path):
    rng = np.random.default_rng(0)
    values = rng.standard_normal((200, 3, 4)).astype(np.float16)
    keys = [f"u{i:03d}" for i in range(200)]
    store = save(tmp_path / "a", values, keys)
    np.testing.assert_array_equal(store.take("x", ["u007", "u003"]), values[[7, 3]])
    assert store.meta["model"] == "same name"

    same = save(tmp_path / "b", values.copy(), keys)
    assert same.digest() == store.digest()  # same contents, another folder

    other = values.copy()
    other[0] += 1  # row 0 is always sampled
    assert save(tmp_path / "c", other, keys).digest() != store.digest()  # same meta, new values
    renamed = [*keys[:-1], "u999"]
    assert save(tmp_path / "d", values, renamed).digest() != store.digest()
