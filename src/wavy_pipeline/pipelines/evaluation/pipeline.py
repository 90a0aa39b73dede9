"""Wiring of the ``evaluation`` pipeline."""

from kedro.pipeline import Node, Pipeline

from wavy_pipeline.pipelines.evaluation.nodes import build_report, score_generated_images


def create_pipeline(**kwargs) -> Pipeline:
    """``heldout=False``: without the held-out summary as an input (the ``heldout``
    pipeline's own copy of these nodes)."""
    heldout = ["heldout.evaluation_metrics"] if kwargs.get("heldout", True) else []
    return Pipeline(
        [
            Node(
                func=score_generated_images,
                inputs=[
                    "generated_images",
                    "utterances",
                    "raw_image_files",
                    "scoring_clip_model",
                    "scoring_clip_processor",
                    "corpus_fingerprint",
                    "retrieval_metrics",
                    "run_provenance",
                    "params:seed",
                    "params:evaluation",
                    *heldout,
                ],
                outputs=["image_scores", "evaluation_metrics"],
                name="score_generated_images",
            ),
            Node(
                func=build_report,
                inputs=[
                    "image_scores",
                    "evaluation_metrics",
                    "retrieval_metrics",
                    "generated_images",
                    "raw_image_files",
                    "params:evaluation",
                ],
                outputs="evaluation_report",
                name="build_report",
            ),
        ],
        tags=["evaluation"],
    )
