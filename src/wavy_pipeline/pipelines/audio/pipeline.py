"""Wiring of the ``audio`` pipeline."""

from kedro.pipeline import Node, Pipeline

from wavy_pipeline.pipelines.audio.nodes import preprocess_audio, report_audio


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=preprocess_audio,
                inputs=[
                    "utterances",
                    "raw_audio_files",
                    "hubert_feature_extractor",
                    "params:audio",
                ],
                outputs="hubert_inputs",
                name="preprocess_audio",
            ),
            Node(
                func=report_audio,
                inputs="hubert_inputs",
                outputs="audio_quarantine",
                name="report_audio",
            ),
        ],
        tags=["audio", "data"],
    )
