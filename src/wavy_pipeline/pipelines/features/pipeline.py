"""Wiring of the ``features`` pipeline."""

from kedro.pipeline import Node, Pipeline

from wavy_pipeline.pipelines.features.nodes import (
    extract_augmented_speech_features,
    extract_clip_embeddings,
    extract_prompt_targets,
    extract_speech_features,
)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=extract_speech_features,
                inputs=["hubert_inputs", "speech_encoder@model", "params:features"],
                outputs="speech_features",
                name="extract_speech_features",
            ),
            Node(
                func=extract_augmented_speech_features,
                inputs=[
                    "hubert_inputs",
                    "utterances",
                    "speech_encoder@model",
                    "params:seed",
                    "params:features",
                ],
                outputs="augmented_speech_features",
                name="extract_augmented_speech_features",
            ),
            Node(
                func=extract_clip_embeddings,
                inputs=[
                    "utterances",
                    "raw_image_files",
                    "clip@model",
                    "clip@processor",
                    "params:features",
                ],
                outputs=["image_embeddings", "text_embeddings"],
                name="extract_clip_embeddings",
            ),
            Node(
                func=extract_prompt_targets,
                inputs=[
                    "utterances",
                    "diffusion@text_encoder",
                    "diffusion@tokenizer",
                    "params:features",
                ],
                outputs="prompt_targets",
                name="extract_prompt_targets",
            ),
        ],
        tags=["features"],
    )
