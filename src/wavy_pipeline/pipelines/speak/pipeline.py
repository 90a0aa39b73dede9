"""Wiring of the ``speak`` pipeline (not part of the default ``kedro run``)."""

from kedro.pipeline import Node, Pipeline

from wavy_pipeline.pipelines.speak.nodes import build_speak_gallery, load_speaker, speak

# The models the web page loads too, through this very node (wavy_pipeline.speak.app).
LOAD_NODE = "load_speaker"


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=load_speaker,
                inputs=[
                    "hubert_feature_extractor",
                    "speech_encoder@ctc",
                    "speech_encoder@processor",
                    "speechclip_model",
                    "image_embeddings",
                    "speech_adapter",
                    "diffusion@pipeline",
                    "params:audio",
                    "params:generation",
                    "params:speak",
                    "params:seed",
                ],
                outputs="speak_models",
                name=LOAD_NODE,
            ),
            Node(
                func=speak,
                inputs=["speak_models", "speak_recordings"],
                outputs=["speak_images", "speak_quarantine"],
                name="speak",
            ),
            Node(
                func=build_speak_gallery,
                inputs=["speak_images", "raw_image_files"],
                outputs="speak_gallery",
                name="build_speak_gallery",
            ),
        ],
        tags=["speak"],
    )
