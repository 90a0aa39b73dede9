"""``heldout``: the trained models applied to a corpus training never saw (voices,
synthesisers, phrasings, backgrounds), reported beside the test split."""

from wavy_pipeline.pipelines.heldout.pipeline import create_pipeline

__all__ = ["create_pipeline"]
