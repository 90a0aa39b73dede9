"""Small stand-ins for the two foundation models Wavy builds on, trained on the demo corpus.

* ``facebook/hubert-large-ls960-ft`` -> :mod:`wavy_pipeline.models.foundation_hubert`
  (HubertForCTC + Wav2Vec2Processor, CTC-trained from scratch)
* ``openai/clip-vit-large-patch14`` -> :mod:`wavy_pipeline.models.foundation_clip`
  (CLIPModel + CLIP BPE tokenizer + 64 px CLIPProcessor, contrastively trained from scratch)

Both are saved with ``save_pretrained`` in the hub layout, so downstream code loads either the
stand-in or the real checkpoint with ``from_pretrained(path_or_name)``. Each trains through
:func:`wavy_pipeline.models.train.fit` with a :class:`~wavy_pipeline.models.train.TrainConfig`
beside its model config. Pure library code.
"""

from wavy_pipeline.models.foundation_clip import (
    TinyClipConfig,
    build_clip_bpe_tokenizer,
    build_clip_image_processor,
    build_clip_processor,
    build_clip_tokenizer,
    train_clip,
)
from wavy_pipeline.models.foundation_hubert import (
    TinyHubertConfig,
    build_ctc_processor,
    ctc_greedy_decode,
    hubert_hidden_states,
    pad_waveforms,
    train_hubert_ctc,
    transcribe,
)

__all__ = [
    "TinyClipConfig",
    "TinyHubertConfig",
    "build_clip_image_processor",
    "build_clip_processor",
    "build_clip_bpe_tokenizer",
    "build_clip_tokenizer",
    "build_ctc_processor",
    "ctc_greedy_decode",
    "hubert_hidden_states",
    "pad_waveforms",
    "train_clip",
    "train_hubert_ctc",
    "transcribe",
]
