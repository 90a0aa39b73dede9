"""Wiring of the ``generation`` pipeline."""

from kedro.pipeline import Node, Pipeline

from wavy_pipeline.pipelines.generation.nodes import generate_images


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=generate_images,
                inputs=[
                    "diffusion@pipeline",
                    "speech_adapter",
                    "speech_features",
                    "utterances",
                    "params:seed",
                    "params:generation",
                ],
                outputs="generated_images",
                name="generate_images",
            )
        ],
        tags=["generation"],
    )
