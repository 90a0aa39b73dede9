"""Wiring of the ``generation`` pipeline."""

from kedro.pipeline import Node, Pipeline

from wavy_pipeline.pipelines.generation.nodes import generate_images


def create_pipeline(**kwargs) -> Pipeline:
    # the diffusion model is conditioned on the adapter's prompt embeddings of the speech
    inputs = ["diffusion@pipeline", "speech_adapter", "speech_features", "utterances"]
    settings = ["params:seed", "params:generation"]
    return Pipeline(
        [Node(generate_images, inputs + settings, "generated_images", name="generate_images")],
        tags=["generation"],
    )
