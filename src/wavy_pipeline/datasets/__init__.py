"""Custom Kedro datasets: every persisted intermediate is versioned and saved atomically.

Thin wrappers: the formats and value types they read and write are in :mod:`wavy_pipeline.core`.
"""

from wavy_pipeline.datasets.arrays import ArrayStoreDataset
from wavy_pipeline.datasets.figures import FigureDataset
from wavy_pipeline.datasets.hubert_inputs import HubertInputsDataset
from wavy_pipeline.datasets.images import ImageCollectionDataset
from wavy_pipeline.datasets.pretrained import PretrainedDataset
from wavy_pipeline.datasets.raw import AudioDataset, ImageFileDataset, TextLinesDataset
from wavy_pipeline.datasets.report import ReportDataset
from wavy_pipeline.datasets.tables import JSONDataset, ParquetTableDataset

__all__ = [
    "ArrayStoreDataset",
    "FigureDataset",
    "AudioDataset",
    "ImageCollectionDataset",
    "HubertInputsDataset",
    "ImageFileDataset",
    "JSONDataset",
    "ParquetTableDataset",
    "PretrainedDataset",
    "ReportDataset",
    "TextLinesDataset",
]
