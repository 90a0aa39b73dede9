"""Tests for the tiny HuBERT-CTC / CLIP stand-ins (fast: tiny models, synthetic data)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    AutoTokenizer,
    CLIPModel,
    CLIPProcessor,
    CLIPTokenizer,
    HubertForCTC,
    Wav2Vec2Processor,
)

from wavy_pipeline.data.augment import AugmentConfig
from wavy_pipeline.models.clip_encoding import encode_clip_images, encode_clip_texts
from wavy_pipeline.models.foundation import (
    TinyClipConfig,
    TinyHubertConfig,
    build_clip_processor,
    build_clip_tokenizer,
    build_ctc_processor,
    ctc_greedy_decode,
    hubert_hidden_states,
    train_clip,
    train_hubert_ctc,
    transcribe,
)
from wavy_pipeline.models.foundation_clip import (
    IGNORE_LABEL,
    ClipWithAttributeHeads,
    attribute_labels,
    clip_attribute_loss,
    clip_loss,
)
from wavy_pipeline.models.foundation_hubert import (
    SPEED_ONLY,
    ctc_collate,
    length_bucketed_batches,
)
from wavy_pipeline.models.train import TrainConfig

CAPTIONS = [
    "there is a small red circle on the left",
    "a big blue square at the top",
    "the green triangle is in the middle",
    "i see a little purple circle",
    "a yellow square on a light background",
    "one orange triangle at the bottom right",
]
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 180, 30),
    "blue": (30, 30, 220),
    "yellow": (230, 220, 20),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def _assert_same_weights(model, reloaded):
    state, state2 = model.state_dict(), reloaded.state_dict()
    assert state.keys() == state2.keys()
    assert all(torch.equal(state[k], state2[k]) for k in state)


# --------------------------------------------------------------------------- CLIP tokenizer
@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("clip")
    build_clip_tokenizer(CAPTIONS, out)
    return out


def test_clip_tokenizer_files_and_layout(clip_dir):
    vocab = json.loads((clip_dir / "vocab.json").read_text(encoding="utf-8"))
    merges = (clip_dir / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert merges[0].startswith("#version")
    assert all(len(line.split(" ")) == 2 for line in merges[1:])
    # 256 byte chars, the same with </w>, one token per merge (at most), then the 2 specials
    assert vocab["!"] == 0 and vocab["!</w>"] == 256
    assert list(vocab)[-2:] == ["<|startoftext|>", "<|endoftext|>"]
    assert 512 + 2 < len(vocab) <= 512 + len(merges) - 1 + 2


def test_clip_tokenizer_one_token_per_word_and_round_trip(clip_dir):
    for tok in (CLIPTokenizer.from_pretrained(clip_dir), AutoTokenizer.from_pretrained(clip_dir)):
        for caption in CAPTIONS:
            ids = tok(caption).input_ids
            assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
            assert len(ids) == len(caption.split()) + 2  # every corpus word is one token
            assert tok.decode(ids, skip_special_tokens=True) == caption
        padded = tok(CAPTIONS[:2], padding="max_length", return_tensors="pt")
        assert padded.input_ids.shape == (2, 77) and tok.model_max_length == 77
        assert padded.input_ids[0, -1] == tok.pad_token_id == tok.eos_token_id


def test_clip_tokenizer_unknown_words_fall_back(clip_dir):
    tok = CLIPTokenizer.from_pretrained(clip_dir)
    ids = tok("a zebra!", add_special_tokens=False).input_ids
    assert len(ids) > 3 and tok.unk_token_id not in ids
    assert tok.decode(ids) == "a zebra !"  # CLIP's decoder spaces punctuation


# --------------------------------------------------------------------------- CLIP training
def _square_image(colour, rng):
    img = np.full((64, 64, 3), 245, dtype=np.uint8)
    x, y = rng.integers(4, 36, size=2)
    img[y : y + 24, x : x + 24] = COLOURS[colour]
    return Image.fromarray(img)


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny_clip")


@pytest.fixture(scope="module")
def tiny_clip(tiny_clip_dir):
    rng = np.random.default_rng(0)
    images, captions, image_ids = [], [], []
    for i in range(24):
        colour = list(COLOURS)[i % 4]
        image = _square_image(colour, rng)
        for template in ("a {} square", "the square is {}"):
            images.append(image)
            captions.append(template.format(colour))
            image_ids.append(i)
    build_clip_tokenizer(captions, tiny_clip_dir)
    processor = build_clip_processor(tiny_clip_dir)
    config = TinyClipConfig(
        text_hidden_size=32,
        text_num_layers=1,
        text_intermediate_size=64,
        vision_hidden_size=32,
        vision_num_layers=1,
        vision_intermediate_size=64,
        patch_size=16,
        projection_dim=32,
    )
    train_cfg = TrainConfig(
        batch_size=12, drop_last=False, lr=3e-3, warmup_steps=5, max_epochs=30, log_every_steps=5
    )
    result = train_clip(images, captions, image_ids, processor, config, train_cfg, progress=False)
    return result.model, processor, result.history


def test_clip_processor_save_load(tiny_clip, tiny_clip_dir):
    _, processor, _ = tiny_clip
    reloaded = CLIPProcessor.from_pretrained(tiny_clip_dir)
    image = _square_image("red", np.random.default_rng(1))
    a = processor(images=image, text=["a red square"], return_tensors="pt", padding="max_length")
    b = reloaded(images=image, text=["a red square"], return_tensors="pt", padding="max_length")
    assert a["pixel_values"].shape == (1, 3, 64, 64)
    assert torch.equal(a["pixel_values"], b["pixel_values"])
    assert torch.equal(a["input_ids"], b["input_ids"]) and a["input_ids"].shape == (1, 77)


def test_clip_training_beats_chance(tiny_clip):
    model, processor, history = tiny_clip
    assert history[-1]["loss"] < history[0]["loss"]
    assert model.config.text_config.max_position_embeddings == 77
    rng = np.random.default_rng(123)  # unseen images
    images = [_square_image(c, rng) for c in COLOURS for _ in range(3)]
    image_colour = np.repeat(np.arange(4), 3)
    sim = encode_clip_texts(model, processor, [f"a {c} square" for c in COLOURS]) @ (
        encode_clip_images(model, processor, images).T
    )
    hit_rate = float(np.mean(image_colour[sim.argmax(1)] == np.arange(4)))
    assert hit_rate > 0.25  # chance: 1 / 4 colours
    assert hit_rate >= 0.75


def _smallest_clip(**kw) -> TinyClipConfig:
    """A CLIP config small enough to train in a second (16-wide towers, one layer each)."""
    sizes = dict(text_hidden_size=16, text_num_layers=1, text_num_heads=2,
                 text_intermediate_size=16, vision_hidden_size=16, vision_num_layers=1,
                 vision_num_heads=2, vision_intermediate_size=16, patch_size=32,
                 projection_dim=8)  # fmt: skip
    return TinyClipConfig(**(sizes | kw))


def test_clip_one_caption_per_image_and_resume(tiny_clip, tmp_path):
    _, processor, _ = tiny_clip
    rng = np.random.default_rng(3)
    images = [_square_image(c, rng) for c in COLOURS]
    captions = [f"a {c} square" for c in COLOURS]
    config = _smallest_clip(all_captions=False, augment_shift_px=4)
    train_cfg = TrainConfig(batch_size=4, warmup_steps=1, max_epochs=2, log_every_steps=1)
    args = (images, captions, list(COLOURS), processor, config)
    result = train_clip(*args, train_cfg, tmp_path / "a", progress=False)
    assert [h["step"] for h in result.history] == [1, 2]
    assert result.model.logit_scale.item() <= np.log(100) + 1e-6
    # a run stopped after one step and resumed ends on the same weights (seeded shifts and
    # caption draws included)
    stop = TrainConfig(**vars(train_cfg) | {"max_steps_this_run": 1})
    assert not train_clip(*args, stop, tmp_path / "b", progress=False).completed
    resumed = train_clip(*args, train_cfg, tmp_path / "b", progress=False)
    assert resumed.resumed_from_step == 1
    _assert_same_weights(result.model, resumed.model)


def test_clip_save_from_pretrained_round_trip(tiny_clip, tmp_path):
    model, processor, _ = tiny_clip
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    model2 = CLIPModel.from_pretrained(tmp_path).eval()
    processor2 = CLIPProcessor.from_pretrained(tmp_path)
    image = _square_image("blue", np.random.default_rng(2))
    inputs = processor(text=CAPTIONS[:2], images=image, return_tensors="pt", padding="max_length")
    inputs2 = processor2(text=CAPTIONS[:2], images=image, return_tensors="pt", padding="max_length")
    assert all(torch.equal(inputs[k], inputs2[k]) for k in inputs)
    _assert_same_weights(model, model2)
    with torch.no_grad():
        out, out2 = model(**inputs), model2(**inputs2)
    # bit-equal weights; outputs may differ in the last float bit only because safetensors'
    # memory-mapped tensors are not 64-byte aligned, which changes the BLAS summation order
    torch.testing.assert_close(out.logits_per_text, out2.logits_per_text, rtol=0, atol=1e-5)
    torch.testing.assert_close(
        out.text_model_output.last_hidden_state,
        out2.text_model_output.last_hidden_state,
        rtol=0,
        atol=1e-5,
    )


def test_attribute_labels_hand_values():
    classes = {"color": ["blue", "red"], "position": ["left", "right"]}
    rows = [{"color": "red", "position": "left"}, {"color": "blue"}, {"color": "green"}]
    labels = attribute_labels(rows, classes)
    assert labels.tolist() == [[1, 0], [0, IGNORE_LABEL], [IGNORE_LABEL, IGNORE_LABEL]]


def test_clip_attribute_loss_is_clip_loss_plus_the_heads_cross_entropy(tiny_clip):
    """Heads that output 0 for every class have cross-entropy ln(classes) on each labelled
    row: text heads (colour only; no caption states a position) ln 2, image heads the mean
    of ln 2 and ln 3, so the loss is CLIP's + weight * (ln 2 + (ln 2 + ln 3) / 2)."""
    model, processor, _ = tiny_clip
    wrapped = ClipWithAttributeHeads(
        model, {"color": ["blue", "red"], "position": ["left", "right", "center"]}
    )
    for head in [*wrapped.text_heads.values(), *wrapped.image_heads.values()]:
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.zeros_(head.bias)
    rng = np.random.default_rng(5)
    pixels = processor.image_processor(
        images=[_square_image(c, rng) for c in ("red", "blue")], return_tensors="pt"
    )["pixel_values"]
    ids = processor.tokenizer(
        ["a red square", "the square is red", "a blue square"],
        padding="max_length",
        return_tensors="pt",
    )["input_ids"]
    batch = {
        "pixel_values": pixels,
        "input_ids": ids,
        "text_image": torch.tensor([0, 0, 1]),
        "text_labels": torch.tensor([[1, IGNORE_LABEL], [1, IGNORE_LABEL], [0, IGNORE_LABEL]]),
        "image_labels": torch.tensor([[1, 0], [0, 2]]),
    }
    with torch.no_grad():
        plain = clip_loss(model, batch).item()
        with_heads = clip_attribute_loss(wrapped, batch, weight=0.5).item()
    expected = plain + 0.5 * (np.log(2) + (np.log(2) + np.log(3)) / 2)
    assert with_heads == pytest.approx(expected, rel=1e-5)


def test_clip_with_attribute_heads_trains_and_returns_a_plain_clip(tiny_clip, tmp_path):
    _, processor, _ = tiny_clip
    rng = np.random.default_rng(4)
    images = [_square_image(c, rng) for c in COLOURS]
    captions = [f"a {c} square" for c in COLOURS]
    attributes = [{"color": c, "shape": "square"} for c in COLOURS]
    config = _smallest_clip(attribute_loss_weight=1.0)
    train_cfg = TrainConfig(batch_size=4, warmup_steps=1, max_epochs=3, log_every_steps=1)
    args = (images, captions, list(COLOURS), processor, config, train_cfg)
    with pytest.raises(ValueError, match="needs attributes"):
        train_clip(*args, progress=False)
    result = train_clip(*args, attributes=attributes, stated=[{"color"}] * 4, progress=False)
    assert type(result.model) is CLIPModel and not result.model.training
    assert not any("head" in k for k in result.model.state_dict())
    result.model.save_pretrained(tmp_path)
    _assert_same_weights(result.model, CLIPModel.from_pretrained(tmp_path))


# --------------------------------------------------------------------------- CTC processor
def test_ctc_processor_vocab_and_round_trip(tmp_path):
    processor = build_ctc_processor(CAPTIONS, tmp_path)
    vocab = processor.tokenizer.get_vocab()
    assert vocab["<pad>"] == 0 == processor.tokenizer.pad_token_id  # CTC blank
    assert vocab["<unk>"] == 3 and vocab["|"] == 4
    assert set("abcdefghilmnoprstuy") <= set(vocab)
    ids = processor.tokenizer("red circle").input_ids
    assert ids[3] == vocab["|"] and len(ids) == len("red circle")
    assert processor.tokenizer.decode(ids, group_tokens=False) == "red circle"
    fe = processor.feature_extractor
    assert (fe.sampling_rate, fe.feature_size, fe.padding_value) == (16000, 1, 0.0)
    assert fe.do_normalize and fe.return_attention_mask
    reloaded = Wav2Vec2Processor.from_pretrained(tmp_path)
    assert reloaded.tokenizer.get_vocab() == vocab
    assert reloaded.tokenizer("red circle").input_ids == ids
    assert reloaded.feature_extractor.to_dict() == fe.to_dict()


def test_ctc_vocab_spells_every_english_word_whatever_the_transcripts():
    # the demo corpus has no j, v, x or z: a fixed alphabet still spells "violet" and "jazz"
    processor = build_ctc_processor(["a red circle", "two 2"])
    vocab = processor.tokenizer.get_vocab()
    letters = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])][5:]
    assert letters == [*"abcdefghijklmnopqrstuvwxyz'", "2"]  # then the other characters
    for word in ("violet", "jazz", "don't"):
        ids = processor.tokenizer(word).input_ids
        assert vocab["<unk>"] not in ids
        assert processor.tokenizer.decode(ids, group_tokens=False) == word
    assert (
        build_ctc_processor(["zz"]).tokenizer.get_vocab()
        == build_ctc_processor(["aa"]).tokenizer.get_vocab()
    )


def test_ctc_greedy_decode_collapses_repeats_and_blanks():
    processor = build_ctc_processor(["ab ba"])
    v = processor.tokenizer.get_vocab()
    path = ["<pad>", "a", "a", "<pad>", "b", "|", "|", "b", "<pad>", "a", "<pad>", "a"]
    logits = torch.full((1, len(path), len(v)), -5.0)
    for t, token in enumerate(path):
        logits[0, t, v[token]] = 5.0
    # repeats collapse, a blank between two "a" keeps both, "|" becomes a space
    assert ctc_greedy_decode(logits, processor) == ["ab baa"]
    # frames beyond the valid length are ignored
    assert ctc_greedy_decode(logits, processor, frame_lengths=[5]) == ["ab"]


def test_tiny_hubert_config_matches_hubert_large_layout():
    processor = build_ctc_processor(CAPTIONS)
    config = TinyHubertConfig().to_hf(processor)
    assert config.inputs_to_logits_ratio == 320
    assert config.do_stable_layer_norm and config.feat_extract_norm == "layer"
    assert config.ctc_loss_reduction == "mean" and config.vocab_size == len(processor.tokenizer)
    assert config.pad_token_id == 0


# --------------------------------------------------------------------------- CTC training
def _tone_utterance(text, rng, freqs, chunk=1600):
    """One 0.1 s tone (+ noise) per character: a trivially learnable synthetic 'speech'."""
    t = np.arange(chunk) / 16000
    parts = [np.sin(2 * np.pi * freqs[ch] * t + rng.uniform(0, 6)) for ch in text]
    wav = np.concatenate(parts) + 0.05 * rng.standard_normal(chunk * len(text))
    return ((wav - wav.mean()) / wav.std()).astype(np.float32)


_TINY = {
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "conv_dim": (16,) * 5,
    "num_conv_pos_embeddings": 8,
    "num_conv_pos_embedding_groups": 4,
    "mask_time_prob": 0.0,
    "augment": None,
}
_WORDS = ["ab", "ba", "ab ba", "ba ab", "aab"]


@pytest.fixture(scope="module")
def tiny_hubert():
    rng = np.random.default_rng(0)
    freqs = {"a": 300.0, "b": 1200.0, " ": 3000.0}
    texts = [str(w) for w in rng.choice(_WORDS, size=24)]
    wavs = [_tone_utterance(text, rng, freqs) for text in texts]
    processor = build_ctc_processor(texts)
    config = TinyHubertConfig(**_TINY)
    train_cfg = TrainConfig(
        batch_size=8, drop_last=False, lr=3e-3, warmup_steps=2, max_epochs=8, log_every_steps=3
    )
    result = train_hubert_ctc(wavs, texts, processor, config, train_cfg, progress=False)
    return result.model, processor, result.history, wavs


def test_ctc_training_decreases_loss(tiny_hubert):
    model, _, history, _ = tiny_hubert
    assert len(history) == 8 and history[-1]["step"] == 24  # 8 epochs of 3 batches
    assert history[-1]["loss"] < 0.8 * history[0]["loss"]
    assert not model.training


def test_ctc_fine_tuning_starts_from_init_and_leaves_it_alone(tiny_hubert, tmp_path):
    model, processor, _, wavs = tiny_hubert
    texts = [str(w) for w in np.random.default_rng(0).choice(_WORDS, size=24)]  # the fixture's
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = TinyHubertConfig(**_TINY)
    train_cfg = TrainConfig(batch_size=8, drop_last=False, lr=1e-3, warmup_steps=1,
                            max_epochs=1, log_every_steps=1)  # fmt: skip

    def tune(init, checkpoint_dir=None):
        return train_hubert_ctc(
            wavs, texts, processor, config, train_cfg, checkpoint_dir, init=init, progress=False
        )

    scratch, tuned = tune(None), tune(model)
    # from the trained model the first step's loss is already low; from scratch it is not
    assert tuned.history[0]["loss"] < 0.5 * scratch.history[0]["loss"]
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # init kept
    # a checkpoint made from another init is not resumed: the run starts again from its own
    first = tune(model, tmp_path / "ft")
    assert tune(scratch.model, tmp_path / "ft").history[0]["loss"] > first.history[0]["loss"]
    bigger = build_ctc_processor([*texts, "ab 7"])  # one more character: one more token
    with pytest.raises(ValueError, match="vocabulary of"):
        train_hubert_ctc(wavs, texts, bigger, config, train_cfg, init=model, progress=False)


def test_ctc_training_is_seeded():
    rng = np.random.default_rng(1)
    wavs = [_tone_utterance("ab", rng, {"a": 300.0, "b": 900.0}) for _ in range(4)]
    processor = build_ctc_processor(["ab"])
    config = TinyHubertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=16, conv_dim=(8,) * 5, num_conv_pos_embeddings=4,
                              num_conv_pos_embedding_groups=2)  # fmt: skip
    train_cfg = TrainConfig(batch_size=2, warmup_steps=1, max_epochs=1, log_every_steps=1)
    runs = [
        train_hubert_ctc(wavs, ["ab"] * 4, processor, config, train_cfg, progress=False)
        for _ in range(2)
    ]
    assert runs[0].history == runs[1].history  # speed perturbation and SpecAugment seeded
    _assert_same_weights(runs[0].model, runs[1].model)


def test_length_buckets_cover_every_item_once_per_epoch():
    lengths = [100 * (i % 7 + 1) for i in range(23)]
    batches = length_bucketed_batches(lengths, 4, seed=3)
    for epoch in range(3):
        chunks = batches(epoch)
        assert sorted(i for chunk in chunks for i in chunk) == list(range(23))
        assert len(chunks) == 6 and chunks == batches(epoch)  # a function of the epoch
        spread = [max(lengths[i] for i in c) - min(lengths[i] for i in c) for c in chunks]
        assert max(spread) <= 300  # similar lengths together (all lengths: 100..700)
    assert batches(0) != batches(1)


def test_hubert_save_from_pretrained_round_trip(tiny_hubert, tmp_path):
    model, processor, _, wavs = tiny_hubert
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    model2 = HubertForCTC.from_pretrained(tmp_path).eval()
    processor2 = Wav2Vec2Processor.from_pretrained(tmp_path)
    inputs = processor2(wavs[:3], sampling_rate=16000, padding=True, return_tensors="pt")
    _assert_same_weights(model, model2)
    with torch.no_grad():
        a = model(**inputs).logits
        b = model2(**inputs).logits
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert transcribe(model, processor, wavs[:6]) == transcribe(model2, processor2, wavs[:6])
    states = hubert_hidden_states(model2, wavs[:2])
    frames = int(model._get_feat_extract_output_lengths(torch.tensor(len(wavs[0]))))
    assert states[0].shape == (frames, model.config.hidden_size)


def test_ctc_collate_augments_each_waveform_reproducibly():
    """Augmentation is drawn from the batch generator (same seed, same batch), changes
    lengths by the speed factor, and hands HuBERT normalised waveforms; none: untouched."""
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(n).astype(np.float32) for n in (8000, 9000, 7000)]
    items = [{"wave": w, "labels": [1, 2, 3][: k + 1]} for k, w in enumerate(waves)]
    every = AugmentConfig(p_speed=1.0, p_noise=1.0, p_reverb=1.0, p_gain=1.0, p_eq=1.0)
    first = ctc_collate(items, torch.Generator().manual_seed(1), every)
    again = ctc_collate(items, torch.Generator().manual_seed(1), every)
    other = ctc_collate(items, torch.Generator().manual_seed(2), every)
    assert torch.equal(first["input_values"], again["input_values"])
    assert not torch.equal(first["input_values"], other["input_values"])
    lengths = first["attention_mask"].sum(1).tolist()
    for n, wave, row in zip(lengths, waves, first["input_values"], strict=True):
        assert len(wave) / 1.1 - 1 <= n <= len(wave) / 0.9 + 1  # speed 0.9-1.1
        assert abs(float(row[:n].mean())) < 1e-3 and abs(float(row[:n].std()) - 1) < 1e-2
    plain = ctc_collate(items, torch.Generator().manual_seed(1), None)
    assert plain["attention_mask"].sum(1).tolist() == [8000, 9000, 7000]
    assert torch.equal(plain["input_values"][1], torch.from_numpy(waves[1]))
    assert plain["labels"].tolist()[0] == [1, -100, -100]
    assert TinyHubertConfig().augment == SPEED_ONLY
    assert TinyHubertConfig(augment={"p_noise": 0.5, "snr_db": [10, 20]}).augment.snr_db == (
        10,
        20,
    )
    with pytest.raises(ValueError, match="unknown augment settings"):
        TinyHubertConfig(augment={"p_nosie": 0.5})
