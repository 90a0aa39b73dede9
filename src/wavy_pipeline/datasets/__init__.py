"""Custom Kedro datasets: every persisted intermediate is versioned and saved atomically."""

from wavy_pipeline.datasets.arrays import ArrayStore, ArrayStoreDataset, ArrayStream
from wavy_pipeline.datasets.figures import FigureDataset
from wavy_pipeline.datasets.hubert_inputs import HubertInputs, HubertInputsDataset
from wavy_pipeline.datasets.images import ImageCollection, ImageCollectionDataset
from wavy_pipeline.datasets.pretrained import PretrainedDataset
from wavy_pipeline.datasets.raw import AudioDataset, ImageFileDataset, TextLinesDataset
from wavy_pipeline.datasets.report import ReportDataset
from wavy_pipeline.datasets.tables import JSONDataset, ParquetTableDataset

__all__ = [
    "ArrayStore",
    "ArrayStoreDataset",
    "ArrayStream",
    "FigureDataset",
    "AudioDataset",
    "HubertInputs",
    "ImageCollection",
    "ImageCollectionDataset",
    "HubertInputsDataset",
    "ImageFileDataset",
    "JSONDataset",
    "ParquetTableDataset",
    "PretrainedDataset",
    "ReportDataset",
    "TextLinesDataset",
]
