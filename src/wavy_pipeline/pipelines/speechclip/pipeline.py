"""Wiring of the ``speechclip`` pipeline."""

from kedro.pipeline import Node, Pipeline

from wavy_pipeline.pipelines.speechclip.nodes import (
    evaluate_retrieval,
    train_speech_adapter,
    train_speechclip,
)


def create_pipeline(**kwargs) -> Pipeline:
    """``heldout=False``: ``evaluate_retrieval`` without the held-out metrics as an input
    (the ``heldout`` pipeline's own copy of it)."""
    heldout = ["heldout.retrieval_metrics"] if kwargs.get("heldout", True) else []
    return Pipeline(
        [
            Node(
                func=train_speechclip,
                inputs=[
                    "speech_features",
                    "image_embeddings",
                    "utterances",
                    "params:seed",
                    "params:speechclip",
                    "augmented_speech_features",
                ],
                outputs=["speechclip_model", "speechclip_history", "speechclip_training_plot"],
                name="train_speechclip",
                tags=["training"],
            ),
            Node(
                func=evaluate_retrieval,
                inputs=[
                    "speechclip_model",
                    "speech_features",
                    "image_embeddings",
                    "text_embeddings",
                    "utterances",
                    "corpus_fingerprint",
                    "run_provenance",
                    "params:speechclip",
                    *heldout,
                ],
                outputs="retrieval_metrics",
                name="evaluate_retrieval",
                tags=["evaluation"],
            ),
            Node(
                func=train_speech_adapter,
                inputs=[
                    "speechclip_model",
                    "speech_features",
                    "prompt_targets",
                    "utterances",
                    "params:seed",
                    "params:speech_adapter",
                    "augmented_speech_features",
                    "diffusion@tokenizer",
                ],
                outputs=["speech_adapter", "adapter_history"],
                name="train_speech_adapter",
                tags=["training"],
            ),
        ],
        tags=["speechclip"],
    )
