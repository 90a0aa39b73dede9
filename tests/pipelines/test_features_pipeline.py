"""The ``features`` pipeline with small random encoders built from configs (no hub)."""

from __future__ import annotations

import numpy as np
import pytest
from kedro.runner import SequentialRunner
from transformers import CLIPTextModel, HubertConfig, HubertModel

from wavy_pipeline.models.foundation import (
    TinyClipConfig,
    build_clip_processor,
    build_clip_tokenizer,
)
from wavy_pipeline.pipelines import audio, features, ingestion


@pytest.fixture
def encoders(tmp_path):
    hubert = HubertModel(
        HubertConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            conv_dim=(16,) * 7,
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=4,
            do_stable_layer_norm=True,
            feat_extract_norm="layer",
        )
    )
    captions = [f"a shape number {i} caption {n} ." for i in range(6) for n in range(2)]
    tokenizer = build_clip_tokenizer(captions, tmp_path / "clip")
    processor = build_clip_processor(tmp_path / "clip", 64, tokenizer)
    from transformers import CLIPModel

    clip = CLIPModel(TinyClipConfig(text_num_layers=1, vision_num_layers=1).to_hf(tokenizer))
    return hubert, clip, processor


def test_features_cache_every_utterance_and_image(corpus, in_tmp, encoders, project_catalog):
    hubert, clip, processor = encoders
    catalog = project_catalog(corpus)
    catalog["speech_encoder@model"] = hubert
    catalog["clip@model"] = clip
    catalog["clip@processor"] = processor
    catalog["diffusion@text_encoder"] = CLIPTextModel(clip.config.text_config)
    catalog["diffusion@tokenizer"] = processor.tokenizer
    SequentialRunner().run(
        ingestion.create_pipeline() + audio.create_pipeline() + features.create_pipeline(),
        catalog,
    )
    utterances = catalog.load("utterances")
    speech = catalog.load("speech_features")
    assert sorted(speech.keys) == sorted(utterances["utterance_id"])
    assert speech["layers"].shape == (12, 3, 8, 32)  # utterances, layers + 1, segments, dim
    assert speech["layers"].dtype == np.float16
    assert np.isfinite(speech["layers"]).all()
    images = catalog.load("image_embeddings")
    assert images.keys == sorted(utterances["image_id"].unique())
    assert images["embedding"].shape == (6, 128)
    texts = catalog.load("text_embeddings")
    assert texts["embedding"].shape == (12, 128)
    targets = catalog.load("prompt_targets")
    assert targets["hidden"].shape == (12, 77, 128)  # what SD's encode_prompt would give
    # features.augmented_copies of every train utterance, and of nothing else
    copies = catalog.load("augmented_speech_features")
    n_copies = catalog.load("params:features")["augmented_copies"]
    train = utterances[utterances["split"] == "train"]["utterance_id"]
    assert n_copies >= 1 and len(train)
    assert sorted(copies.keys) == sorted(
        f"{u}~aug{k}" for u in train for k in range(1, n_copies + 1)
    )
    assert copies["layers"].shape[1:] == speech["layers"].shape[1:]
    assert np.isfinite(copies["layers"]).all()
    first = copies.take("layers", [f"{train.iloc[0]}~aug1"])[0].astype(np.float32)
    source = speech.take("layers", [train.iloc[0]])[0].astype(np.float32)
    assert not np.allclose(first, source, atol=1e-3)  # augmented, not a copy
    # the cache equals running the encoder directly on one utterance
    inputs = catalog.load("hubert_inputs")
    import torch

    from wavy_pipeline.models.speech_features import hubert_layer_features

    uid = speech.keys[0]
    values = torch.from_numpy(inputs.values(uid))[None]
    direct = hubert_layer_features(
        hubert.eval(), values, torch.ones_like(values, dtype=torch.long), 8
    )
    np.testing.assert_allclose(
        speech.take("layers", [uid])[0], direct[0].numpy(), atol=2e-2, rtol=1e-2
    )
