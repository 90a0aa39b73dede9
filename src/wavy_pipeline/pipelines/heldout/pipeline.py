"""Wiring of the ``heldout`` pipeline: the ingestion, audio, features, retrieval
evaluation, generation and evaluation nodes again, in the Kedro namespace ``heldout``.

Every dataset they make is ``heldout.<name>`` (its own catalog entry and folder); the
corpus is ``heldout_corpus_root``. The models and encoders are *inputs* shared with the
main DAG, not namespaced: the held-out figures are those of the models this run trained
(or, with ``--pipelines heldout``, of the persisted ones). The test split's
``evaluate_retrieval`` and ``score_generated_images`` take the held-out metrics this
pipeline saves and put them under their ``heldout`` block.
"""

from kedro.pipeline import Pipeline, pipeline

from wavy_pipeline.pipelines import audio, evaluation, features, generation, ingestion, speechclip

# the trained models and frozen encoders: the same datasets as the main DAG's
SHARED = [
    "hubert_feature_extractor",
    "speech_encoder@model",
    "clip@model",
    "clip@processor",
    "speechclip_model",
    "speech_adapter",
    "diffusion@pipeline",
    "scoring_clip_model",
    "scoring_clip_processor",
]

# the main DAG's settings, as they are (the rest: parameters_heldout.yml)
SHARED_PARAMETERS = ["seed", "audio", "features", "speechclip", "evaluation"]


def create_pipeline(**kwargs) -> Pipeline:
    stages = (
        ingestion.create_pipeline()
        + audio.create_pipeline()
        + features.create_pipeline().only_nodes(
            "extract_speech_features", "extract_clip_embeddings"
        )
        + speechclip.create_pipeline(heldout=False).only_nodes("evaluate_retrieval")
        + generation.create_pipeline()
        + evaluation.create_pipeline(heldout=False)
    )
    return pipeline(
        stages,
        namespace="heldout",
        inputs=set(SHARED),
        parameters={
            **{f"params:{name}": f"params:{name}" for name in SHARED_PARAMETERS},
            "params:corpus_root": "params:heldout_corpus_root",
            "params:ingestion": "params:heldout.ingestion",
            "params:generation": "params:heldout.generation",
        },
        tags=["heldout"],
    )
