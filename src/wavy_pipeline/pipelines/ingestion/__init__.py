"""``ingestion``: wav2capt metadata, captions, splits and speakers → utterance table."""

from wavy_pipeline.pipelines.ingestion.pipeline import create_pipeline

__all__ = ["create_pipeline"]
