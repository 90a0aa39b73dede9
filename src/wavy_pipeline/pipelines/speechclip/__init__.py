"""``speechclip``: train the speech/image projectors on cached features; retrieval."""

from wavy_pipeline.pipelines.speechclip.pipeline import create_pipeline

__all__ = ["create_pipeline"]
