"""Hugging Face objects (models, processors, tokenizers, diffusers pipelines) as datasets."""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kedro.io.core import DatasetError

from wavy_pipeline.datasets._atomic import AtomicVersionedDataset


def import_class(class_name: str) -> type:
    """``"transformers.HubertForCTC"`` → the class."""
    module, _, name = class_name.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise DatasetError(f"Cannot import '{class_name}': {exc}") from exc


def store_half_precision(folder: str | Path, patterns: Sequence[str]) -> list[str]:
    """Rewrite each ``*.safetensors`` under ``folder`` with its float32 tensors whose name
    matches one of ``patterns`` (``fnmatch``) stored as float16; returns their names.

    For the demo stand-ins' 49,408 x 128 token-embedding tables (6.3 M of their text
    towers' 6.7 M weights, once in the CLIP folder and once as the diffusion folder's text
    encoder): half the bytes in git. ``config.json`` still says float32, so
    ``from_pretrained`` loads them into a float32 model, rounded to float16 precision."""
    # here, not at import: building the catalog needs no torch
    import torch  # noqa: PLC0415
    from safetensors import safe_open  # noqa: PLC0415
    from safetensors.torch import save_file  # noqa: PLC0415

    changed = []
    for file in sorted(Path(folder).rglob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            metadata = f.metadata()
            tensors = {name: f.get_tensor(name) for name in f.keys()}
        hits = [
            n
            for n, t in tensors.items()
            if t.dtype == torch.float32 and any(fnmatch.fnmatchcase(n, p) for p in patterns)
        ]
        if hits:
            tensors |= {n: tensors[n].to(torch.float16) for n in hits}
            save_file(tensors, str(file), metadata=metadata)
            changed += hits
    return changed


class PretrainedDataset(AtomicVersionedDataset[Any, Any]):
    """Anything with ``from_pretrained`` / ``save_pretrained``, by hub id or folder.

    The same entry loads a hub checkpoint in the paper's configuration and a folder the
    project trained in the demo, exactly as ``from_pretrained(name_or_path)`` would.
    Versioned entries are folders written with ``save_pretrained``, atomically; saving a
    tuple such as ``(model, processor)`` puts both in the one folder. Kedro transcoding
    (``speech_encoder@ctc`` saved, ``speech_encoder@model`` loaded) reads one folder as
    several classes.

    Example:
        ```yaml
        hubert_processor:
          type: wavy_pipeline.datasets.PretrainedDataset
          class_name: transformers.AutoFeatureExtractor
          name_or_path: facebook/hubert-large-ls960-ft   # or a local folder
        ```

    Args:
        name_or_path: Hub id or local folder (the versioned folder when versioned).
        class_name: Importable class with ``from_pretrained``.
        load_args: Keyword arguments of ``from_pretrained`` (``torch_dtype``, …).
        save_args: Keyword arguments of ``save_pretrained``.
        half_precision: Names (``fnmatch`` patterns) of float32 weights to store as float16
            in the saved ``*.safetensors`` (:func:`store_half_precision`); loading puts them
            back in the model's float32.
    """

    def __init__(
        self,
        *,
        name_or_path: str,
        class_name: str,
        half_precision: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(filepath=name_or_path, **kwargs)
        self._name_or_path = name_or_path
        self._class_name = class_name
        self._half_precision = tuple(half_precision)

    def load(self) -> Any:
        if self._version:
            return super().load()
        local = Path(self._name_or_path)
        return self._read(local if local.exists() else self._name_or_path)

    def _read(self, path: Path | str) -> Any:
        cls = import_class(self._class_name)
        if self._class_name.startswith("diffusers."):
            # the demo's diffusion stand-in names its UNet class in model_index.json, and
            # diffusers only loads classes from modules already imported
            importlib.import_module("wavy_pipeline.models.coord_unet")
        try:
            return cls.from_pretrained(str(path), **self._load_args)
        except OSError as exc:
            raise DatasetError(
                f"Could not load {self._class_name} from '{path}': it is not a local folder "
                "and the Hugging Face hub could not provide it. Download it first "
                "(huggingface-cli download …) or point the catalog at a local folder; "
                f"see README 'Reproduce the paper'. ({exc})"
            ) from exc

    def _write(self, data: Any, path: Path) -> None:
        # A tuple (model, processor) lands in one folder, as hub repositories hold both.
        for part in data if isinstance(data, tuple | list) else (data,):
            part.save_pretrained(str(path), **self._save_args)
        if self._half_precision:
            store_half_precision(path, self._half_precision)

    def _fetch_latest_load_version(self) -> str:
        # Not cached: transcoded entries are separate datasets on one folder, so a version
        # ``speech_encoder@ctc`` saves must be what ``speech_encoder@processor`` loads next in
        # the same run (Kedro clears only the saving entry's cache; a cached latest version
        # paired a new model with the previous processor).
        self._cached_load_version = None
        return super()._fetch_latest_load_version()

    def _exists(self) -> bool:
        return Path(self._get_load_path()).exists()

    def _describe(self) -> dict[str, Any]:
        return super()._describe() | {"class_name": self._class_name}
