"""``evaluation``: CLIP score, R-precision, FD/KID(/IS), attributes, provenance, report."""

from wavy_pipeline.pipelines.evaluation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
