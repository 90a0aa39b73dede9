"""Speech -> prompt_embeds adapter: shapes, injection, loss, save/load, and that it learns.

The synthetic task: a tiny random ``CLIPTextModel`` (vocab 50, hidden 32, 77 positions) is
the frozen SD text encoder; captions are random word sequences, their targets its hidden
states. Each utterance's features are a noisy function of its caption's words (segment k
carries the words of the k-th quarter of the caption, layer 0 only noise), read through a
frozen, randomly initialised SpeechCLIP speech branch.
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import CLIPTextConfig, CLIPTextModel

from wavy_pipeline.models.adapter import (
    AdapterConfig,
    SpeechBranch,
    SpeechPromptAdapter,
    distillation_loss,
    distillation_metrics,
    encode_with_pseudo_tokens,
    eos_positions,
    mean_target,
    placeholder_prompt,
    predict,
    target_retrieval_r1,
    train_adapter,
)
from wavy_pipeline.models.speechclip import SpeechCLIP, SpeechCLIPConfig
from wavy_pipeline.models.train import TrainConfig

VOCAB, HIDDEN, T = 50, 32, 77
BOS, EOS, PLACEHOLDER = 48, 49, 47
N_WORDS = 40  # caption words are ids 1..39
L, K, D, E = 3, 4, 16, 16


pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- synthetic task
# a quick CPU run of the tiny adapters: no periodic checkpoints
QUICK = {"batch_size": 16, "checkpoint_every_steps": None, "device": "cpu"}


def tiny_text_encoder(seed: int = 0) -> CLIPTextModel:
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=T,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=EOS,
    )
    return CLIPTextModel(config).eval()


def tiny_speechclip(seed: int = 0) -> SpeechCLIP:
    torch.manual_seed(seed)
    config = SpeechCLIPConfig(
        num_layers=L, speech_dim=D, image_dim=E, num_segments=K, n_heads=2, ffn_dim=32, dropout=0.0
    )
    return SpeechCLIP(config).eval()


def prompt_ids() -> list[int]:
    """ "a photo of <*>" in the tiny vocabulary: BOS 10 11 12 <*> EOS, EOS-padded to 77."""
    return [BOS, 10, 11, 12, PLACEHOLDER] + [EOS] * (T - 5)


def adapter_config(kind: str, **overrides) -> AdapterConfig:
    kwargs = {"kind": kind, "text_dim": HIDDEN, "width": 32, "n_layers": 2, "n_heads": 4}
    if kind == "pseudo_token":
        kwargs |= {"prompt_ids": prompt_ids(), "placeholder_id": PLACEHOLDER, "width": 64}
    return AdapterConfig(**(kwargs | overrides))


class Utterances:
    """Items ``{"speech": (L, K, D), "target": (77, d), "eos_index": ()}`` (+ caption id)."""

    def __init__(self, feats, targets, eos, caption):
        self.feats, self.targets, self.eos, self.caption = feats, targets, eos, caption

    def __len__(self):
        return len(self.feats)

    def __getitem__(self, i):
        c = self.caption[i]
        return {"speech": self.feats[i], "target": self.targets[c], "eos_index": self.eos[c]}


def make_task(
    text_encoder, n_captions=12, utts_per_caption=12, held_out_per_caption=4, noise=0.3, seed=0
):
    """Train and held-out utterances (fresh noise) of the same captions; returns
    ``(train, held_out, caption_targets (M, 77, d))``."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.full((n_captions, T), EOS)
    ids[:, 0] = BOS
    words = []
    for c in range(n_captions):
        n = int(torch.randint(3, 9, (1,), generator=g))
        words.append(torch.randint(1, N_WORDS, (n,), generator=g))
        ids[c, 1 : n + 1] = words[-1]
    with torch.no_grad():
        targets = text_encoder(input_ids=ids)[0].float()
    eos = eos_positions(ids, EOS)
    word_vectors = torch.randn(N_WORDS, D, generator=g)
    mixing = torch.randn(L, D, D, generator=g) / D**0.5
    mixing[0] = 0.0  # layer 0 carries only noise
    clean = torch.zeros(n_captions, K, D)
    for c, w in enumerate(words):  # segment k: words [k n / K, (k + 1) n / K), never empty
        n = len(w)
        for k in range(K):
            clean[c, k] = word_vectors[w[k * n // K : -(-(k + 1) * n // K)]].mean(0)
    clean = torch.einsum("lde,cke->clkd", mixing, clean)  # (M, L, K, D)

    def utterances(per_caption):
        caption = torch.arange(n_captions).repeat_interleave(per_caption)
        feats = clean[caption] + noise * torch.randn(len(caption), L, K, D, generator=g)
        return Utterances(feats, targets, eos, caption)

    return utterances(utts_per_caption), utterances(held_out_per_caption), targets


def held_out_metrics(adapter, held_out, gallery):
    return distillation_metrics(
        adapter,
        held_out.feats,
        gallery[held_out.caption],
        eos_index=held_out.eos[held_out.caption],
        gallery=gallery,
        index=held_out.caption,
    )


# --------------------------------------------------------------------------- tests
@pytest.mark.parametrize(
    ("kind", "use_segments", "use_pooled", "n_queries"),
    [
        ("mapper", True, True, None),
        ("mapper", True, True, 8),
        ("mapper", True, False, None),
        ("mapper", False, True, None),
        ("pseudo_token", False, True, None),
        ("pseudo_token", True, True, None),
    ],
)
def test_shapes_and_only_the_head_trains(kind, use_segments, use_pooled, n_queries):
    text_encoder = tiny_text_encoder()
    config = adapter_config(
        kind, use_segments=use_segments, use_pooled=use_pooled, n_queries=n_queries
    )
    adapter = SpeechPromptAdapter(config, tiny_speechclip(), text_encoder)
    out = adapter(torch.randn(3, L, K, D))
    assert out.shape == (3, T, HIDDEN)
    out.square().mean().backward()

    trainable = {n for n, p in adapter.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("head.") for n in trainable)
    assert all(p.grad is not None for n, p in adapter.named_parameters() if n in trainable)
    assert all(p.grad is None for p in adapter.speech.parameters())
    assert not any(k.startswith(("text_encoder", "_text_encoder")) for k in adapter.state_dict())
    if kind == "pseudo_token":
        assert adapter.text_encoder is text_encoder  # by reference, frozen
        assert all(not p.requires_grad and p.grad is None for p in text_encoder.parameters())
    else:
        assert adapter.text_encoder is None
    adapter.train()  # fit() does this: the frozen parts must stay in eval mode (no dropout)
    assert adapter.head.training and not adapter.speech.training and not text_encoder.training
    with pytest.raises(ValueError, match="speech features"):
        adapter(torch.randn(3, L, K + 1, D))


def test_fewer_queries_start_as_interpolation_along_the_sequence():
    config = adapter_config("mapper", n_queries=4, n_tokens=7)
    adapter = SpeechPromptAdapter(config, tiny_speechclip())
    weight = adapter.head.expand.weight  # (7 tokens, 4 queries)
    half = [0.5, 0.5]
    expected = torch.tensor(
        [
            [1, 0, 0, 0],
            half + [0, 0],
            [0, 1, 0, 0],
            [0, *half, 0],
            [0, 0, 1, 0],
            [0, 0, *half],
            [0, 0, 0, 1],
        ]
    )
    torch.testing.assert_close(weight.detach(), expected.float())
    # one query per token (the default) has no mixing layer at all
    assert not hasattr(
        SpeechPromptAdapter(adapter_config("mapper"), tiny_speechclip()).head, "expand"
    )


def test_speech_branch_is_a_frozen_copy_of_speechclip():
    speechclip = tiny_speechclip()
    with torch.no_grad():
        speechclip.layer_logits.copy_(torch.tensor([0.3, -1.0, 2.0]))
    branch = SpeechBranch.from_speechclip(speechclip)
    feats = torch.randn(5, L, K, D)
    segments, pooled = branch(feats)
    w = speechclip.layer_weights()
    torch.testing.assert_close(segments, torch.einsum("l,blkd->bkd", w, feats))
    torch.testing.assert_close(pooled, speechclip.encode_speech(feats))
    with torch.no_grad():  # later changes to the SpeechCLIP model do not leak in
        speechclip.layer_logits.zero_()
    torch.testing.assert_close(branch(feats)[1], pooled)
    assert not any(k.startswith(("image_proj", "logit_scale")) for k in branch.state_dict())


def test_pseudo_token_injection_equals_the_text_encoder_on_a_real_word():
    text_encoder = tiny_text_encoder()
    embedding = text_encoder.embeddings.token_embedding.weight
    words = torch.tensor([20, 33])
    pseudo = embedding[words][:, None].detach().requires_grad_(True)  # (2, 1, d)
    ids = torch.tensor(prompt_ids())
    out = encode_with_pseudo_tokens(text_encoder, ids, torch.tensor([4]), pseudo)
    reference_ids = ids.repeat(2, 1)
    reference_ids[:, 4] = words
    with torch.no_grad():
        reference = text_encoder(input_ids=reference_ids)[0]
    torch.testing.assert_close(out, reference)
    out.sum().backward()
    assert pseudo.grad is not None and pseudo.grad.abs().sum() > 0
    # the hook is gone afterwards
    with torch.no_grad():
        torch.testing.assert_close(text_encoder(input_ids=reference_ids)[0], reference)


def test_placeholder_prompt_with_a_clip_tokenizer(tmp_path):
    from wavy_pipeline.models.foundation_clip import build_clip_tokenizer

    tokenizer = build_clip_tokenizer(["a photo of a red circle", "a blue square"], tmp_path)
    ids, placeholder = placeholder_prompt(tokenizer, "a photo of {}", "~", n_pseudo_tokens=2)
    expected = tokenizer("a photo of ~ ~", padding="max_length", max_length=77).input_ids
    assert ids == expected and len(ids) == 77 and ids.count(placeholder) == 2
    assert ids.index(placeholder) == 4  # BOS a photo of <*> <*> EOS ...
    with pytest.raises(ValueError, match="tokens, need exactly 1"):
        placeholder_prompt(tokenizer, placeholder="zebra")
    with pytest.raises(ValueError, match="occurs"):
        placeholder_prompt(tokenizer, "a photo of {}", "a")


def test_config_validation_and_round_trip():
    config = adapter_config("pseudo_token", n_pseudo_tokens=1)
    assert AdapterConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="kind"):
        AdapterConfig(kind="lora")
    with pytest.raises(ValueError, match="both be False"):
        adapter_config("mapper", use_segments=False, use_pooled=False)
    with pytest.raises(ValueError, match="occurs 1 times"):
        adapter_config("pseudo_token", n_pseudo_tokens=2)
    with pytest.raises(ValueError, match="prompt_ids"):
        AdapterConfig(kind="pseudo_token", text_dim=HIDDEN)
    with pytest.raises(ValueError, match="unknown"):
        AdapterConfig.from_dict(config.to_dict() | {"bogus": 1})
    for bad in (0, T + 1):
        with pytest.raises(ValueError, match="n_queries"):
            adapter_config("mapper", n_queries=bad)
    with pytest.raises(ValueError, match="text_encoder"):
        SpeechPromptAdapter(config, tiny_speechclip())
    with pytest.raises(ValueError, match="hidden size"):
        SpeechPromptAdapter(
            adapter_config("pseudo_token", text_dim=64), tiny_speechclip(), tiny_text_encoder()
        )


def test_distillation_loss():
    g = torch.Generator().manual_seed(0)
    target = torch.randn(4, T, HIDDEN, generator=g)
    eos = torch.tensor([3, 5, 7, 76])
    assert distillation_loss(target, target, eos).item() == pytest.approx(0.0, abs=1e-6)
    pred = target + 0.5  # MSE 0.25
    pred[torch.arange(4), eos] = -target[torch.arange(4), eos]  # cos -1 at EOS: 1 - cos = 2
    mse = (pred - target).square().mean().item()
    assert distillation_loss(pred, target, eos, cos_weight=0.0).item() == pytest.approx(mse)
    assert distillation_loss(pred, target, eos, mse_weight=0.0, cos_weight=1.0).item() == (
        pytest.approx(2.0)
    )
    assert distillation_loss(pred, target, eos).item() == pytest.approx(mse + 0.1 * 2.0)
    # without eos_index the cosine is taken at the last position (unchanged there: cos = 1)
    assert distillation_loss(pred, target, mse_weight=0.0, cos_weight=1.0).item() == (
        pytest.approx(1 - torch.cosine_similarity(pred[:, -1], target[:, -1], dim=-1).mean())
    )
    with pytest.raises(ValueError, match=r"\(B, T, d\)"):
        distillation_loss(pred[:, :10], target)
    with pytest.raises(ValueError, match="eos_index"):
        distillation_loss(pred, target, eos[:2])


def test_distillation_loss_tail_term_weighs_the_rows_from_eos_on():
    target = torch.zeros(2, T, HIDDEN)
    pred = torch.zeros(2, T, HIDDEN)
    pred[0, 10:] = 1.0  # item 0: error 1 on rows 10..76 (67 rows)
    pred[1, :5] = 2.0  # item 1: error 2 on rows 0..4 only, before its tail
    tail_from = torch.tensor([10, 5])
    # by hand: tail rows are 67 (item 0) + 72 (item 1) = 139, squared error 67 * 1 on them;
    # the MSE over all rows is (67 * 1 + 5 * 4) / (2 * 77)
    mse = (67 + 20) / (2 * T)
    tail = 67 / 139
    got = distillation_loss(pred, target, cos_weight=0.0, tail_weight=2.0, tail_from=tail_from)
    assert got.item() == pytest.approx(mse + 2.0 * tail)
    assert distillation_loss(pred, target, cos_weight=0.0).item() == pytest.approx(mse)
    with pytest.raises(ValueError, match="tail_from"):
        distillation_loss(pred, target, tail_weight=1.0)
    with pytest.raises(ValueError, match="tail_weight"):
        AdapterConfig(tail_weight=-1.0)


def test_caption_eos_rows_find_each_captions_eos(tmp_path):
    from wavy_pipeline.adapter.distillation import caption_eos_rows
    from wavy_pipeline.models.foundation_clip import build_clip_tokenizer

    captions = ["a red circle", "the blue square is on the left", "a red circle"]
    tokenizer = build_clip_tokenizer(captions, tmp_path)
    rows = caption_eos_rows(tokenizer, captions, 77)
    assert set(rows) == set(captions)
    for caption, row in rows.items():
        ids = tokenizer(caption).input_ids  # BOS, the words, EOS
        assert row == len(ids) - 1
    assert rows["the blue square is on the left"] > rows["a red circle"]


def test_target_retrieval_can_fail():
    g = torch.Generator().manual_seed(0)
    gallery = torch.randn(8, T, HIDDEN, generator=g) + 5.0  # large shared part
    index = torch.arange(8).repeat(2)
    assert target_retrieval_r1(gallery[index] + 0.1, gallery, index) == 1.0
    constant = gallery.mean(0, keepdim=True).expand(16, -1, -1) + 1e-3 * torch.randn(16, T, HIDDEN)
    assert target_retrieval_r1(constant, gallery, index) <= 0.4
    assert target_retrieval_r1(gallery[index.roll(1)], gallery, index) == 0.0


@pytest.mark.parametrize(
    ("kind", "n_queries"), [("mapper", None), ("mapper", 8), ("pseudo_token", None)]
)
def test_save_load_round_trip(tmp_path, kind, n_queries):
    text_encoder = tiny_text_encoder()
    config = adapter_config(kind, n_queries=n_queries)
    adapter = SpeechPromptAdapter(config, tiny_speechclip(), text_encoder)
    with torch.no_grad():  # make every weight non-default
        for p in adapter.head.parameters():
            p.add_(0.01 * torch.randn_like(p))
    adapter.eval()
    target = tmp_path / "adapter"
    adapter.save_pretrained(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]
    meta = json.loads((target / "config.json").read_text())
    assert meta["adapter"] == adapter.config.to_dict()

    loaded = SpeechPromptAdapter.from_pretrained(target, text_encoder=text_encoder)
    assert loaded.config == adapter.config and not loaded.training
    original, restored = adapter.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    assert all(torch.equal(original[k], restored[k]) for k in original)
    assert any(k.startswith("speech.pool.") for k in restored)  # self-contained
    assert not any(k.startswith("speech.image_proj") for k in restored)
    feats = torch.randn(3, L, K, D)
    with torch.no_grad():
        torch.testing.assert_close(loaded(feats), adapter(feats), rtol=0, atol=0)
    if kind == "pseudo_token":
        with pytest.raises(ValueError, match="text_encoder"):
            SpeechPromptAdapter.from_pretrained(target)
        with pytest.raises(ValueError, match="vocab_size"):
            other = CLIPTextModel(
                CLIPTextConfig(
                    vocab_size=60,
                    hidden_size=HIDDEN,
                    num_hidden_layers=1,
                    num_attention_heads=4,
                    intermediate_size=32,
                )
            )
            SpeechPromptAdapter.from_pretrained(target, text_encoder=other)


def test_mapper_learns_and_retrieves_held_out_captions(tmp_path):
    text_encoder = tiny_text_encoder()
    train, held_out, gallery = make_task(text_encoder)
    torch.manual_seed(0)
    adapter = SpeechPromptAdapter(adapter_config("mapper", n_layers=1), tiny_speechclip())
    train_cfg = TrainConfig(
        **QUICK, lr=5e-3, warmup_steps=10, max_epochs=12, monitor="neg_eval_loss"
    )
    adapter.init_output_bias(mean_target(train))
    before = held_out_metrics(adapter, held_out, gallery)
    result = train_adapter(
        adapter,
        train,
        lambda m: held_out_metrics(m, held_out, gallery),
        train_cfg,
        tmp_path / "ckpt",
        progress=False,
    )
    after = held_out_metrics(result.model, held_out, gallery)
    # loss of the mean-caption prediction vs the trained mapper on fresh utterances
    assert after["eval_loss"] < 0.35 * before["eval_loss"], (before, after)
    assert before["R@1"] <= 0.25  # the mean prediction cannot tell the 12 captions apart
    assert after["R@1"] >= 0.75, after  # 48 held-out utterances, chance 1/12
    epoch_losses = [row["loss"] for row in result.history if "eval_loss" in row]  # train loss
    assert len(epoch_losses) == 12 and epoch_losses[-1] < 0.5 * epoch_losses[0]

    # a finished run is resumed, not repeated (same best weights) ...
    def rerun(speechclip, **overrides):
        return train_adapter(
            SpeechPromptAdapter(adapter_config("mapper", n_layers=1), speechclip),
            train,
            lambda m: held_out_metrics(m, held_out, gallery),
            TrainConfig(**(vars(train_cfg) | overrides)),
            tmp_path / "ckpt",
            progress=False,
        )

    again = rerun(tiny_speechclip())
    assert again.resumed_from_step == result.history[-1]["step"]
    torch.testing.assert_close(
        predict(again.model, held_out.feats), predict(result.model, held_out.feats)
    )
    # ... but not with another (frozen) SpeechCLIP: that starts afresh
    other = rerun(tiny_speechclip(seed=1), max_steps_this_run=1)
    assert other.resumed_from_step is None and not other.completed


def test_pseudo_token_learns(tmp_path):
    text_encoder = tiny_text_encoder()
    train, held_out, gallery = make_task(text_encoder, utts_per_caption=4)
    torch.manual_seed(0)
    adapter = SpeechPromptAdapter(adapter_config("pseudo_token"), tiny_speechclip(), text_encoder)
    before = held_out_metrics(adapter, held_out, gallery)
    train_cfg = TrainConfig(**QUICK, lr=3e-3, warmup_steps=5, max_epochs=10, log_every_steps=4)
    result = train_adapter(adapter, train, None, train_cfg, tmp_path / "ckpt", progress=False)
    after = held_out_metrics(result.model, held_out, gallery)
    assert after["eval_loss"] < 0.7 * before["eval_loss"], (before, after)
    assert before["R@1"] <= 0.25 and after["R@1"] > 2 / 12, after  # chance: 1/12
    assert all(not p.requires_grad for p in text_encoder.parameters())


def test_learned_segment_layers_mix_the_layers_with_the_adapters_own_weights(tmp_path):
    speechclip = tiny_speechclip()
    with torch.no_grad():
        speechclip.layer_logits.copy_(torch.tensor([0.3, -1.0, 2.0]))
    config = adapter_config("mapper", segment_layers="learned")
    adapter = SpeechPromptAdapter(config, speechclip)
    feats = torch.randn(4, L, K, D)
    seen = {}
    adapter.head.register_forward_pre_hook(lambda m, args: seen.update(segments=args[0]))
    adapter(feats).square().mean().backward()
    # equal weights at the start, not SpeechCLIP's
    torch.testing.assert_close(seen["segments"], feats.mean(dim=1))
    assert adapter.segment_layer_logits.grad is not None  # it trains with the head
    assert all(p.grad is None for p in adapter.speech.parameters())  # SpeechCLIP stays frozen
    _, pooled = adapter.speech(feats)
    torch.testing.assert_close(pooled, speechclip.encode_speech(feats))  # pooled: SpeechCLIP's
    with torch.no_grad():
        adapter.segment_layer_logits.copy_(torch.tensor([-5.0, 0.0, 5.0]))
    adapter.save_pretrained(tmp_path / "ad")
    loaded = SpeechPromptAdapter.from_pretrained(tmp_path / "ad")
    torch.testing.assert_close(loaded.segment_layer_logits, adapter.segment_layer_logits)
    torch.testing.assert_close(loaded.eval()(feats), adapter.eval()(feats))
    with pytest.raises(ValueError, match="segment_layers"):
        adapter_config("mapper", segment_layers="first")
