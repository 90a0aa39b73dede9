"""Custom Kedro datasets: every persisted intermediate is versioned and saved atomically."""

from wavy_pipeline.datasets.hubert_inputs import HubertInputs, HubertInputsDataset
from wavy_pipeline.datasets.pretrained import PretrainedDataset
from wavy_pipeline.datasets.raw import AudioDataset, TextLinesDataset
from wavy_pipeline.datasets.tables import JSONDataset, ParquetTableDataset

__all__ = [
    "AudioDataset",
    "HubertInputs",
    "HubertInputsDataset",
    "JSONDataset",
    "ParquetTableDataset",
    "PretrainedDataset",
    "TextLinesDataset",
]
