"""Wiring of the ``ingestion`` pipeline."""

from kedro.pipeline import Node, Pipeline

from wavy_pipeline.pipelines.ingestion.nodes import check_ingestion, ingest_corpus
from wavy_pipeline.provenance import METADATA, fingerprint_corpus

# ingest_corpus's inputs: the corpus's metadata files, its file listings, its settings
CORPUS = [
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
]


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                ingest_corpus,
                CORPUS,
                ["ingested_utterances", "ingestion_quarantine"],
                name="ingest_corpus",
            ),
            # A separate node, so the quarantine is saved before a stop (a node that
            # raises saves nothing) and the stop can name that version's path.
            Node(
                check_ingestion,
                ["ingested_utterances", "ingestion_quarantine", "params:ingestion"],
                "utterances",
                name="check_ingestion",
            ),
            # provenance: which corpus every later figure was measured on
            Node(
                fingerprint_corpus,
                ["params:corpus_root", *METADATA],
                "corpus_fingerprint",
                name="fingerprint_corpus",
            ),
        ],
        tags=["ingestion", "data"],
    )
