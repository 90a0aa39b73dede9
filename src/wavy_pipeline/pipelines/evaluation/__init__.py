"""``evaluation``: CLIP score (speech vs text vs ground truth), attributes, report."""

from wavy_pipeline.pipelines.evaluation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
