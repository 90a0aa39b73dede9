"""SpeechCLIP shapes, initialisation and save/load."""

import json
import math

import pytest
import torch

from wavy_pipeline.models.speechclip import SpeechCLIP, SpeechCLIPConfig


def small_config(**overrides) -> SpeechCLIPConfig:
    kwargs = {
        "num_layers": 3,
        "speech_dim": 16,
        "image_dim": 12,
        "num_segments": 5,
        "n_heads": 2,
        "ffn_dim": 32,
    }
    return SpeechCLIPConfig(**(kwargs | overrides))


@pytest.mark.parametrize("pooling", ["cls_transformer", "attentive"])
@pytest.mark.parametrize("num_segments", [1, 5])
def test_shapes_and_unit_norm(pooling, num_segments):
    torch.manual_seed(0)
    model = SpeechCLIP(small_config(pooling=pooling, num_segments=num_segments)).eval()
    feats, images = torch.randn(4, 3, num_segments, 16), torch.randn(4, 12)
    speech_emb, image_emb, scale = model(feats, images)
    assert speech_emb.shape == image_emb.shape == (4, 12)
    torch.testing.assert_close(speech_emb.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(image_emb.norm(dim=-1), torch.ones(4))
    assert scale.item() == pytest.approx(1 / 0.07, rel=1e-5)
    speech_emb.sum().backward()
    assert model.layer_logits.grad is not None
    with pytest.raises(ValueError, match="speech features"):
        model.encode_speech(torch.randn(4, 3, num_segments + 1, 16))


def test_initialisation():
    model = SpeechCLIP(small_config())
    torch.testing.assert_close(model.layer_weights(), torch.full((3,), 1 / 3))
    assert torch.equal(model.image_proj.weight, torch.eye(12))
    images = torch.randn(6, 12)
    torch.testing.assert_close(model.encode_image(images), torch.nn.functional.normalize(images))
    wide = SpeechCLIP(small_config(embed_dim=8)).image_proj.weight  # (8, 12): orthonormal rows
    torch.testing.assert_close(wide @ wide.T, torch.eye(8), atol=1e-5, rtol=0)
    assert SpeechCLIP(small_config(init_temperature=0.5, max_logit_scale=1.5)).scale().item() == 1.5
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))


def test_config_round_trip_and_validation():
    config = small_config(pooling="attentive")
    assert config.embed_dim == 12 and config.to_dict()["embed_dim"] == 12
    assert SpeechCLIPConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown"):
        SpeechCLIPConfig.from_dict(config.to_dict() | {"bogus": 1})
    with pytest.raises(ValueError, match="pooling"):
        small_config(pooling="max")
    with pytest.raises(ValueError, match="n_heads"):
        small_config(n_heads=3)


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = SpeechCLIP(small_config(pooling="attentive")).eval()
    with torch.no_grad():
        model.layer_logits.copy_(torch.tensor([0.5, -1.0, 2.0]))
    target = tmp_path / "speechclip"
    SpeechCLIP(small_config()).save_pretrained(target)  # an older model, to be replaced
    model.save_pretrained(target)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["speechclip"]  # no temp dirs left
    assert json.loads((target / "config.json").read_text()) == model.config.to_dict()
    loaded = SpeechCLIP.from_pretrained(target).eval()
    assert loaded.config == model.config
    original, restored = model.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    assert all(torch.equal(original[k], restored[k]) for k in original)
    feats, images = torch.randn(2, 3, 5, 16), torch.randn(2, 12)
    for a, b in zip(model(feats, images), loaded(feats, images), strict=True):
        assert torch.equal(a, b)


def test_saved_through_the_catalog_dataset_atomically(tmp_path, monkeypatch):
    """The model writes its folder in place (the hub mixin); the Kedro dataset makes the
    version appear only once it is complete."""
    from kedro.io.core import Version

    from wavy_pipeline.datasets import PretrainedDataset

    def dataset(version=None):
        return PretrainedDataset(
            name_or_path=str(tmp_path / "speechclip"),
            class_name="wavy_pipeline.models.speechclip.SpeechCLIP",
            version=Version(version, version),
        )

    torch.manual_seed(0)
    model = SpeechCLIP(small_config()).eval()
    write_weights = SpeechCLIP._save_pretrained

    def killed(self, directory):
        write_weights(self, directory)
        raise KeyboardInterrupt  # killed after the weights, before config.json

    monkeypatch.setattr(SpeechCLIP, "_save_pretrained", killed)
    with pytest.raises(KeyboardInterrupt):
        dataset("2026-01-01T00.00.00.000Z").save(model)
    saved = tmp_path / "speechclip"
    assert not list(saved.glob("*/speechclip"))  # no version, nothing to load
    assert not list(saved.rglob("*.safetensors"))  # the partial folder is gone
    monkeypatch.setattr(SpeechCLIP, "_save_pretrained", write_weights)
    dataset("2026-01-01T00.00.01.000Z").save(model)
    loaded = dataset().load()
    assert loaded.config == model.config and not loaded.training
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
