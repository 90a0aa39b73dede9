"""Wiring of the ``foundation`` pipeline (demo configuration only)."""

from kedro.pipeline import Node, Pipeline

from wavy_pipeline.pipelines import audio, ingestion
from wavy_pipeline.pipelines.foundation.nodes import (
    evaluate_clip_model,
    evaluate_speech_encoder,
    train_clip_model,
    train_diffusion_model,
    train_speech_encoder,
)


def create_pipeline(**kwargs) -> Pipeline:
    """The stand-in encoders, with the data pipelines they train on (so that
    ``kedro run --pipelines foundation`` works on a fresh checkout)."""
    return (
        ingestion.create_pipeline()
        + audio.create_pipeline()
        + Pipeline(
            [
                Node(
                    func=train_speech_encoder,
                    inputs=[
                        "hubert_inputs",
                        "utterances",
                        "params:seed",
                        "params:foundation.hubert",
                    ],
                    outputs=["speech_encoder@ctc", "speech_encoder_history"],
                    name="train_speech_encoder",
                    tags=["training"],
                ),
                Node(
                    func=evaluate_speech_encoder,
                    inputs=[
                        "speech_encoder@ctc",
                        "speech_encoder@processor",
                        "hubert_inputs",
                        "utterances",
                    ],
                    outputs="speech_encoder_metrics",
                    name="evaluate_speech_encoder",
                    tags=["evaluation"],
                ),
                Node(
                    func=train_clip_model,
                    inputs=[
                        "utterances",
                        "raw_image_files",
                        "params:seed",
                        "params:foundation.clip",
                    ],
                    outputs=["clip@trained", "clip_history"],
                    name="train_clip",
                    tags=["training"],
                ),
                Node(
                    func=evaluate_clip_model,
                    inputs=["clip@model", "clip@processor", "utterances", "raw_image_files"],
                    outputs="clip_metrics",
                    name="evaluate_clip",
                    tags=["evaluation"],
                ),
                Node(
                    func=train_diffusion_model,
                    inputs=[
                        "utterances",
                        "raw_image_files",
                        "clip@model",
                        "clip@processor",
                        "params:seed",
                        "params:foundation.diffusion",
                        "params:generation",
                        "params:evaluation",
                    ],
                    outputs=["diffusion@trained", "diffusion_history"],
                    name="train_diffusion",
                    tags=["training"],
                ),
            ],
            tags=["foundation"],
        )
    )
