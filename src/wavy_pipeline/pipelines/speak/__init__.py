"""``speak``: your recordings → images, what the model heard, the nearest corpus images."""

from wavy_pipeline.pipelines.speak.pipeline import create_pipeline

__all__ = ["create_pipeline"]
