"""Wiring of the ``ingestion`` pipeline."""

from kedro.pipeline import Node, Pipeline

from wavy_pipeline.pipelines.ingestion.nodes import check_ingestion, ingest_corpus
from wavy_pipeline.provenance import METADATA, fingerprint_corpus


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=ingest_corpus,
                inputs=[
                    "raw_wav2capt",
                    "raw_captions",
                    "raw_speakers",
                    "raw_train_images",
                    "raw_dev_images",
                    "raw_test_images",
                    "raw_attributes",
                    "raw_audio_files",
                    "raw_image_files",
                    "params:corpus_root",
                    "params:ingestion",
                    "raw_utterance_meta",
                ],
                outputs=["ingested_utterances", "ingestion_quarantine"],
                name="ingest_corpus",
                tags=["ingestion", "data"],
            ),
            # A separate node, so the quarantine is saved before a stop (a node that
            # raises saves nothing) and the stop can name that version's path.
            Node(
                func=check_ingestion,
                inputs=["ingested_utterances", "ingestion_quarantine", "params:ingestion"],
                outputs="utterances",
                name="check_ingestion",
                tags=["ingestion", "data"],
            ),
            # provenance: which corpus every later figure was measured on
            Node(
                func=fingerprint_corpus,
                inputs=["params:corpus_root", *METADATA],
                outputs="corpus_fingerprint",
                name="fingerprint_corpus",
                tags=["ingestion", "data"],
            ),
        ]
    )
