"""``audio``: utterance audio → normalised 16 kHz HuBERT input values (+ quarantine)."""

from wavy_pipeline.pipelines.audio.pipeline import create_pipeline

__all__ = ["create_pipeline"]
