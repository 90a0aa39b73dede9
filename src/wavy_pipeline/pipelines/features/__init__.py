"""``features``: run the frozen encoders once and cache what training needs."""

from wavy_pipeline.pipelines.features.pipeline import create_pipeline

__all__ = ["create_pipeline"]
