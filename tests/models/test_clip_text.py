"""The CLIP stand-in's text side: OpenAI CLIP's own BPE vocabulary (shipped in assets/), and
the random-token insertion that teaches the text tower to ignore words no caption has."""

from __future__ import annotations

import gzip

import pytest
import torch

from wavy_pipeline.models.foundation_clip import (
    CLIP_BPE_MERGES,
    build_clip_bpe_tokenizer,
    insert_random_tokens,
    noise_candidates,
)


@pytest.fixture(scope="module")
def clip_tokenizer(tmp_path_factory):
    return build_clip_bpe_tokenizer(tmp_path_factory.mktemp("clip_bpe"))


def test_the_shipped_vocabulary_is_openai_clips(clip_tokenizer):
    assert len(clip_tokenizer) == 49408
    # ids as openai/clip-vit-large-patch14's tokenizer gives them
    assert clip_tokenizer("a photo of a cat")["input_ids"] == [
        49406,
        320,
        1125,
        539,
        320,
        2368,
        49407,
    ]
    assert clip_tokenizer.pad_token == "<|endoftext|>"


def test_words_no_demo_caption_has_stay_whole_words(clip_tokenizer):
    tokens = clip_tokenizer.tokenize("um so draw me a crimson circle coloured orange please")
    assert tokens == [
        "um</w>", "so</w>", "draw</w>", "me</w>", "a</w>", "crimson</w>", "circle</w>",
        "coloured</w>", "orange</w>", "please</w>",
    ]  # fmt: skip


def test_a_file_that_is_not_the_merge_list_is_a_clear_error(tmp_path):
    bad = tmp_path / "merges.txt.gz"
    bad.write_bytes(gzip.compress(b"#version\na b\n"))
    with pytest.raises(ValueError, match="not CLIP's merge list"):
        build_clip_bpe_tokenizer(tmp_path / "out", bad)
    (tmp_path / "plain.gz").write_text("not gzip")
    with pytest.raises(ValueError, match="cannot read"):
        build_clip_bpe_tokenizer(tmp_path / "out", tmp_path / "plain.gz")
    assert CLIP_BPE_MERGES.is_file()


BOS, EOS = 0, 9


def test_inserted_tokens_keep_the_caption_in_order_and_the_width():
    ids = torch.tensor([[BOS, 5, 6, 7, EOS, EOS, EOS, EOS]] * 50)
    out = insert_random_tokens(
        ids, torch.tensor([100, 101]), EOS, 1.0, 3, torch.Generator().manual_seed(0)
    )
    assert out.shape == ids.shape and torch.equal(ids[0], torch.tensor([0, 5, 6, 7, 9, 9, 9, 9]))
    counts = set()
    for row in out.tolist():
        assert row[0] == BOS
        eos = row.index(EOS)
        body = row[1:eos]
        assert [t for t in body if t < 100] == [5, 6, 7]  # the caption's own words, in order
        assert set(body) - {5, 6, 7} <= {100, 101}
        assert all(t == EOS for t in row[eos:])
        counts.add(len(body) - 3)
    assert counts == {1, 2, 3}  # 1..max_tokens new tokens, each seen over 50 rows


def test_insertion_respects_the_probability_and_the_padding_room():
    ids = torch.tensor([[BOS, 5, 6, EOS, EOS]] * 400)
    gen = torch.Generator().manual_seed(1)
    out = insert_random_tokens(ids, torch.tensor([100]), EOS, 0.25, 3, gen)
    changed = (out != ids).any(1).float().mean().item()
    assert 0.18 < changed < 0.32
    assert ((out == 100).sum(1) <= 1).all()  # only one padding slot: at most one new token
    assert torch.equal(insert_random_tokens(ids, torch.tensor([100]), EOS, 0.0, 3, gen), ids)
    full = torch.tensor([[BOS, 5, 6, 7, EOS]])  # no padding: nothing can be inserted
    assert torch.equal(insert_random_tokens(full, torch.tensor([100]), EOS, 1.0, 3, gen), full)


def test_noise_never_inserts_bos_eos_or_a_protected_word(clip_tokenizer):
    candidates = noise_candidates(clip_tokenizer, ["Red", "circle"])
    vocab = clip_tokenizer.get_vocab()
    assert len(candidates) == 49408 - 4
    banned = {vocab[t] for t in ("<|startoftext|>", "<|endoftext|>", "red</w>", "circle</w>")}
    assert not banned & set(candidates.tolist())
    assert vocab["draw</w>"] in set(candidates.tolist())
