"""fit(): it learns, resumes exactly after an interruption, and stops early."""

import io
import logging
import math

import pytest
import torch

from wavy_pipeline.metrics.retrieval import retrieval_report
from wavy_pipeline.models.losses import masked_info_nce
from wavy_pipeline.models.plots import plot_training_history
from wavy_pipeline.models.speechclip import SpeechCLIP, SpeechCLIPConfig
from wavy_pipeline.models.train import TrainConfig, fit

L, K, D, IMAGE_DIM = 3, 2, 16, 16


pytestmark = pytest.mark.usefixtures("one_thread")


class PairDataset:
    """Synthetic cache: speech features are a fixed noisy linear function of the image."""

    def __init__(self, images, mixing, utts_per_image, noise, generator):
        self.image_ids = torch.arange(len(images)).repeat_interleave(utts_per_image)
        clean = torch.einsum("ni,lkid->nlkd", images[self.image_ids], mixing)
        self.feats = clean + noise * torch.randn(clean.shape, generator=generator)
        self.images = images

    def __len__(self):
        return len(self.image_ids)

    def __getitem__(self, i):
        image_id = self.image_ids[i]
        return {"speech": self.feats[i], "image": self.images[image_id], "image_id": image_id}


def make_task(n_images, utts_per_image, noise=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n_images, IMAGE_DIM, generator=g)
    mixing = torch.randn(L, K, IMAGE_DIM, D, generator=g) / IMAGE_DIM**0.5
    mixing[0] = 0.0  # layer 0 carries only noise
    train = PairDataset(images, mixing, utts_per_image, noise, g)
    held_out = PairDataset(images, mixing, 1, noise, g)
    return train, held_out


def new_model(dropout=0.0):
    torch.manual_seed(0)
    config = SpeechCLIPConfig(
        num_layers=L,
        speech_dim=D,
        image_dim=IMAGE_DIM,
        num_segments=K,
        n_heads=2,
        ffn_dim=32,
        dropout=dropout,
    )
    return SpeechCLIP(config)


def loss_fn(model, batch):
    speech_emb, image_emb, scale = model(batch["speech"], batch["image"])
    return masked_info_nce(speech_emb, image_emb, scale, batch["image_id"])


def make_eval_fn(held_out):
    def eval_fn(model):
        report = retrieval_report(
            model.encode_speech(held_out.feats),
            model.encode_image(held_out.images),
            held_out.image_ids,
        )
        return report["speech_to_image"]

    return eval_fn


def test_warmup_cosine_schedule_of_the_history(tmp_path):
    """The library schedule (transformers' linear warmup, cosine decay to 0) over the run."""
    train, _, config = resume_setup()  # 4 steps per epoch, 3 epochs
    config = TrainConfig(**vars(config) | {"warmup_steps": 4, "log_every_steps": 1})
    result = fit(new_model(), loss_fn, train, None, config, None, progress=False)
    lrs = [row["lr"] / config.lr for row in result.history]  # the LR the next step uses
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[7] == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 8)))
    assert lrs[-1] == pytest.approx(0.0)
    assert not any(tmp_path.iterdir())  # checkpoint_dir None: nothing written


def test_fit_learns_retrieval(tmp_path):
    train, held_out = make_task(n_images=32, utts_per_image=3)
    eval_fn = make_eval_fn(held_out)
    model = new_model()
    with torch.no_grad():
        before = eval_fn(model.eval())["R@1"]
    config = TrainConfig(
        batch_size=16,
        lr=3e-3,
        warmup_steps=10,
        max_epochs=25,
        checkpoint_every_steps=None,
        eval_every_epochs=5,
        log_every_steps=6,
        device="cpu",
    )
    result = fit(model, loss_fn, train, eval_fn, config, tmp_path, progress=False)
    assert before < 0.25  # chance is 1/32
    assert result.best_metric > 0.8
    assert eval_fn(result.model.eval())["R@1"] == result.best_metric  # best weights restored
    assert result.completed and not result.stopped_early and result.resumed_from_step is None
    fig = plot_training_history(result.history)
    assert len(fig.axes) == 2
    fig.savefig(io.BytesIO(), format="png")


def resume_setup():
    train, held_out = make_task(n_images=16, utts_per_image=2)  # 32 items: 4 steps per epoch
    config = TrainConfig(
        batch_size=8,
        lr=1e-3,
        warmup_steps=3,
        max_epochs=3,
        checkpoint_every_steps=3,
        log_every_steps=2,
        device="cpu",
    )
    return train, make_eval_fn(held_out), config


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


class Crash(RuntimeError):
    pass


def crash_on_call(n):
    calls = []

    def crashing_loss_fn(model, batch):
        calls.append(1)
        if len(calls) == n:
            raise Crash
        return loss_fn(model, batch)

    return crashing_loss_fn


def test_resume_after_interruptions_is_exact(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="wavy_pipeline.models.train")
    train, eval_fn, config = resume_setup()
    # dropout > 0 so that the restored torch RNG state matters
    reference = fit(
        new_model(dropout=0.2), loss_fn, train, eval_fn, config, tmp_path / "a", progress=False
    )
    assert reference.completed and reference.history[-1]["step"] == 12

    run_b = tmp_path / "b"
    # 1) planned stop after 5 steps (mid-epoch 2), checkpoint written at step 5
    first = fit(
        new_model(dropout=0.2),
        loss_fn,
        train,
        eval_fn,
        TrainConfig(**vars(config) | {"max_steps_this_run": 5}),
        run_b,
        progress=False,
    )
    assert not first.completed and first.resumed_from_step is None
    # 2) a crash on this run's 3rd step (step 8); the last checkpoint is step 6
    with pytest.raises(Crash):
        fit(new_model(dropout=0.2), crash_on_call(3), train, eval_fn, config, run_b, progress=False)
    assert "Resuming from" in caplog.text
    # 3) a fresh process would rebuild the model from scratch and call fit again
    final = fit(new_model(dropout=0.2), loss_fn, train, eval_fn, config, run_b, progress=False)
    assert final.completed and final.resumed_from_step == 6
    assert_same_weights(final.model, reference.model)  # best weights
    last_a, last_b = (torch.load(d / "checkpoint.pt")["model"] for d in (tmp_path / "a", run_b))
    assert all(torch.equal(last_a[k], last_b[k]) for k in last_a)  # last weights
    assert final.history == reference.history
    assert final.best_metric == reference.best_metric
    assert sorted(p.name for p in run_b.iterdir()) == ["checkpoint.pt"]  # no temp files left

    # a finished run is not trained again
    again = fit(
        new_model(dropout=0.2), crash_on_call(1), train, eval_fn, config, run_b, progress=False
    )
    assert again.resumed_from_step == 12
    assert_same_weights(again.model, reference.model)


def test_changed_config_starts_fresh(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="wavy_pipeline.models.train")
    train, eval_fn, config = resume_setup()
    config.max_epochs = 1
    fit(new_model(), loss_fn, train, eval_fn, config, tmp_path, progress=False)
    changed = TrainConfig(**vars(config) | {"lr": 2e-3, "mixed_precision": "bf16"})
    result = fit(new_model(), loss_fn, train, eval_fn, changed, tmp_path, progress=False)
    assert result.resumed_from_step is None and result.completed
    assert "fingerprint mismatch" in caplog.text
    assert "only used on CUDA" in caplog.text  # bf16 requested on CPU -> fp32


def test_early_stopping_restores_best_weights(tmp_path):
    train, _, config = resume_setup()
    config = TrainConfig(**vars(config) | {"max_epochs": 8, "early_stopping_patience": 2})
    scripted = iter([0.1, 0.5, 0.4, 0.3, 0.9])
    snapshots = []

    def eval_fn(model):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"R@1": next(scripted)}

    result = fit(new_model(), loss_fn, train, eval_fn, config, tmp_path, progress=False)
    assert result.stopped_early and result.completed
    assert result.best_metric == 0.5
    assert [row["R@1"] for row in result.history if "R@1" in row] == [0.1, 0.5, 0.4, 0.3]
    assert result.history[-1]["epoch"] == 4
    best = snapshots[1]
    assert all(torch.equal(v, best[k]) for k, v in result.model.state_dict().items())
    assert not torch.equal(snapshots[3]["speech_proj.weight"], best["speech_proj.weight"])


def noisy_collate(items, generator):
    """A collate with randomness: speech features jittered from the batch's generator."""
    batch = {k: torch.stack([item[k] for item in items]) for k in items[0]}
    batch["speech"] = batch["speech"] + 0.1 * torch.randn(
        batch["speech"].shape, generator=generator
    )
    return batch


def test_step_budget_ema_and_own_batches_resume_exactly(tmp_path):
    train, _, _ = resume_setup()
    drawn = []

    def batches(epoch):  # 3 batches of 8, rotated per epoch; must be a function of epoch
        drawn.append(epoch)
        order = torch.arange(len(train)).roll(epoch).tolist()
        return [order[i : i + 8] for i in range(0, 24, 8)]

    config = TrainConfig(
        batch_size=8,
        lr=1e-3,
        warmup_steps=2,
        max_epochs=None,
        max_steps=7,  # ends in the middle of the third epoch
        ema_decay=0.9,
        checkpoint_every_steps=2,
        log_every_steps=1,
        device="cpu",
    )
    common = {"batches": batches, "collate": noisy_collate, "progress": False}
    reference = fit(new_model(dropout=0.2), loss_fn, train, None, config, tmp_path / "a", **common)
    assert [row["step"] for row in reference.history] == list(range(1, 8))
    assert reference.history[-1]["epoch"] == 3 and reference.history[-1]["lr"] == 0.0
    last = torch.load(tmp_path / "a" / "checkpoint.pt")
    ema = last["ema"]["shadow_params"]
    assert last["ema"]["optimization_step"] == 7
    final = [p.detach() for p in reference.model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(final, ema, strict=True))  # EMA weights
    assert not all(
        torch.equal(a, last["model"][k]) for a, k in zip(final, last["model"], strict=False)
    )

    stop = TrainConfig(**vars(config) | {"max_steps_this_run": 3})
    first = fit(new_model(dropout=0.2), loss_fn, train, None, stop, tmp_path / "b", **common)
    assert not first.completed
    again = fit(new_model(dropout=0.2), loss_fn, train, None, config, tmp_path / "b", **common)
    assert again.completed and again.resumed_from_step == 3
    assert_same_weights(again.model, reference.model)
    assert again.history == reference.history


def test_budgets_and_ema_are_validated():
    with pytest.raises(ValueError, match="max_epochs, max_steps"):
        TrainConfig(max_epochs=None)
    with pytest.raises(ValueError, match="max_steps"):
        TrainConfig(max_steps=0)
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(ema_decay=1.0)
    assert TrainConfig(adam_betas=[0.9, 0.98]).adam_betas == (0.9, 0.98)


def test_config_identity_leaves_out_settings_added_later_while_at_their_default():
    """A field marked ``fingerprint: if_set`` joins a checkpoint's fingerprint only once it
    is set, so checkpoints trained before the field existed still resume."""
    from dataclasses import asdict

    from wavy_pipeline.data.augment import AugmentConfig
    from wavy_pipeline.models.foundation_hubert import TinyHubertConfig
    from wavy_pipeline.models.train import config_identity

    before = asdict(TinyHubertConfig(augment={"p_speed": 1.0}))
    for name in ("p_tilt", "tilt_db_per_octave", "p_band_limit", "band_limit_hz"):
        del before["augment"][name]
    assert config_identity(TinyHubertConfig(augment={"p_speed": 1.0})) == before
    tilted = config_identity(AugmentConfig(p_tilt=0.5))
    assert tilted["p_tilt"] == 0.5 and "p_band_limit" not in tilted
    assert config_identity(3) == 3
