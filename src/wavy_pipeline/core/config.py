"""The dict form of the models' dataclass configs (config.json, the adapter's meta)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, fields
from typing import Any, Self


class DictConfig:
    """Mixin for a ``@dataclass`` config: ``to_dict`` is :func:`dataclasses.asdict`;
    ``from_dict`` rebuilds it and refuses keys that are not fields (a config written by
    other code, or a typo, fails loudly instead of being dropped)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
        return cls(**d)
