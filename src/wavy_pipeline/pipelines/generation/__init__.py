"""``generation``: speech-conditioned images and the text-conditioned baseline."""

from wavy_pipeline.pipelines.generation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
