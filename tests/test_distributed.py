"""Two processes on CPU (gloo), started by ``accelerate launch`` as on N GPUs.

* sharded feature extraction and generation write exactly what one process writes;
* SpeechCLIP and adapter training run data-parallel (DDP), reach the single-process
  weights, and only process 0 writes checkpoints;
* ``kedro run`` under two processes: one version per dataset, written by process 0, loaded
  by both, equal to a single-process computation.

The demo's committed stand-in encoders are the models; this file is also the worker script
the first tests launch (``accelerate launch … tests/test_distributed.py WORKDIR OUT``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from diffusers import StableDiffusionPipeline
from kedro.config import OmegaConfigLoader
from PIL import Image
from transformers import CLIPModel, CLIPProcessor, HubertModel

import wavy_pipeline.models.train as train_module
from wavy_pipeline import distributed
from wavy_pipeline.core.arrays import ArrayStore
from wavy_pipeline.core.hubert_inputs import HubertInputs
from wavy_pipeline.core.images import ImageCollection
from wavy_pipeline.data.audio import UtteranceInput
from wavy_pipeline.datasets import ArrayStoreDataset, HubertInputsDataset, ImageCollectionDataset
from wavy_pipeline.features.encode import (
    image_embedding_stream,
    prompt_embedding_stream,
    speech_feature_stream,
    text_embedding_stream,
)
from wavy_pipeline.generation.generate import (
    _generators,
    attention_backends,
    generation_stream,
    prepare_pipeline,
)
from wavy_pipeline.hooks import MainProcessDataset
from wavy_pipeline.models.adapter import AdapterConfig, SpeechPromptAdapter, train_adapter
from wavy_pipeline.models.speechclip import SpeechCLIP, SpeechCLIPConfig, speechclip_loss
from wavy_pipeline.models.train import TrainConfig, fit

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MODELS = PROJECT_ROOT / "data" / "06_models"
ACCELERATE = Path(sys.executable).parent / "accelerate"
N_UTTERANCES = 11  # HuBERT batches of 4: 4 + 4 + 3, so the last round leaves process 1 idle


def stand_in(name: str) -> Path:
    """The latest committed version of a stand-in model folder."""
    versions = sorted(p for p in (MODELS / name).iterdir() if not p.name.startswith("."))
    return versions[-1] / name


def random_adapter(directory: Path) -> Path:
    """A seeded, untrained speech adapter that fits the committed stand-ins, saved once in
    ``directory`` (the trained one is not committed: a fresh clone has none)."""
    if not (directory / "config.json").exists():
        hubert = HubertModel.from_pretrained(stand_in("speech_encoder")).config
        clip = CLIPModel.from_pretrained(stand_in("clip")).config
        torch.manual_seed(0)
        speech = SpeechCLIP(
            SpeechCLIPConfig(
                num_layers=hubert.num_hidden_layers + 1,
                speech_dim=hubert.hidden_size,
                image_dim=clip.projection_dim,
                num_segments=8,  # features.segments
                n_heads=2,
            )
        )
        config = AdapterConfig(
            text_dim=clip.text_config.hidden_size, width=32, n_layers=1, n_heads=2
        )
        SpeechPromptAdapter(config, speech).eval().save_pretrained(directory)
    return directory


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list[str], cwd: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    """``accelerate launch --multi_gpu --num_processes 2 ARGS`` with ``ACCELERATE_USE_CPU=1``:
    two processes (torchrun) on CPU, gloo; the command users run on GPUs."""
    command = [
        str(ACCELERATE),
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
        *args,
    ]
    env = os.environ | {
        "OMP_NUM_THREADS": "1",
        "OMP_WAIT_POLICY": "PASSIVE",
        "KEDRO_DISABLE_TELEMETRY": "true",
        "HF_HUB_OFFLINE": "1",
        "GLOO_SOCKET_IFNAME": "lo",
        "ACCELERATE_USE_CPU": "1",
        "COLUMNS": "400",  # rich log lines unwrapped
    }
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return done


# --------------------------------------------------------------------------- the work
class _Inputs:
    """A stand-in for the audio stage's stream: what ``HubertInputsDataset`` saves."""

    meta = {"sampling_rate": 16000}

    def __iter__(self):
        rng = np.random.default_rng(0)
        for i in range(N_UTTERANCES):
            values = rng.standard_normal(1600 + 400 * (i % 5)).astype(np.float32)
            yield UtteranceInput(f"utt{i:02d}", values, 16000, len(values) / 16000)


def write_inputs(workdir: Path) -> None:
    """HuBERT inputs and a small utterance table, shared by every run of the work."""
    HubertInputsDataset(filepath=str(workdir / "hubert_inputs")).save(_Inputs())
    ids = [f"utt{i:02d}" for i in range(N_UTTERANCES)]
    pd.DataFrame(
        {
            "utterance_id": ids,
            "image_id": [f"img{i // 2}.jpg" for i in range(N_UTTERANCES)],
            "caption": [f"a {c} circle ." for c in ("red", "blue", "green") * 4][:N_UTTERANCES],
            "speaker": "spk01",
            "unseen_voice": False,
        }
    ).to_parquet(workdir / "utterances.parquet")
    random_adapter(workdir / "adapter")


def _picture(i: int):
    return lambda: Image.new("RGB", (20, 20), (40 * i % 255, 90, 160))


def train_both(out: Path) -> dict[str, dict[str, torch.Tensor]]:
    """SpeechCLIP (contrastive, gathered) and the adapter (per-item loss), a few steps each,
    checkpointing every 2 steps; returns the final weights."""

    g = torch.Generator().manual_seed(0)
    n, layers, segments, dim = 16, 3, 2, 16
    images = torch.randn(n // 2, dim, generator=g)
    pairs = [
        {
            "speech": torch.randn(layers, segments, dim, generator=g) + images[i // 2][None, None],
            "image": images[i // 2],
            "image_id": torch.tensor(i // 2),
            "target": torch.randn(5, 8, generator=g),
        }
        for i in range(n)
    ]
    config = TrainConfig(
        batch_size=8, lr=1e-3, warmup_steps=2, max_epochs=2, checkpoint_every_steps=2
    )
    torch.manual_seed(0)
    speechclip = SpeechCLIP(
        SpeechCLIPConfig(layers, dim, dim, segments, n_heads=2, ffn_dim=32, dropout=0.0)
    )
    result = fit(
        speechclip,
        speechclip_loss,
        pairs,
        lambda m: {"R@1": float(m.logit_scale)},
        config,
        out / "checkpoints" / "speechclip",
        progress=False,
    )
    adapter_cfg = AdapterConfig(
        kind="mapper", text_dim=8, n_tokens=5, width=16, n_layers=1, n_heads=2, dropout=0.0
    )
    torch.manual_seed(0)
    adapter = SpeechPromptAdapter(adapter_cfg, result.model.cpu())
    adapted = train_adapter(
        adapter,
        pairs,
        None,
        config,
        out / "checkpoints" / "adapter",
        progress=False,
    )
    return {
        "speechclip": {k: v.detach().cpu() for k, v in result.model.state_dict().items()},
        "adapter": {k: v.detach().cpu() for k, v in adapted.model.state_dict().items()},
    }


def work(workdir: Path, out: Path) -> None:
    """Features, generation and training, saved the way the pipeline's datasets save them:
    under several processes, process 0 writes and the others drain their streams."""

    torch.set_num_threads(1)
    rank = distributed.process_index()
    save = train_module._atomic_torch_save

    def counted_save(obj, path):  # every checkpoint write, with the writer's rank
        with open(out / "checkpoint_writes.log", "a") as log:
            log.write(f"{rank}\n")
        save(obj, path)

    train_module._atomic_torch_save = counted_save

    def store(name: str, stream) -> None:
        MainProcessDataset(ArrayStoreDataset(filepath=str(out / name))).save(stream)

    inputs = HubertInputs(workdir / "hubert_inputs")
    utterances = pd.read_parquet(workdir / "utterances.parquet")
    options = {"device": "auto", "dtype": "auto"}
    hubert = HubertModel.from_pretrained(stand_in("speech_encoder"))
    store(
        "speech_features",
        speech_feature_stream(inputs, hubert, segments=8, batch_size=4, **options),
    )
    clip = CLIPModel.from_pretrained(stand_in("clip"))
    processor = CLIPProcessor.from_pretrained(stand_in("clip"))
    image_ids = sorted(utterances["image_id"].unique())
    pictures = {key: _picture(i) for i, key in enumerate(image_ids)}
    store(
        "image_embeddings",
        image_embedding_stream(
            image_ids, pictures, clip, processor.image_processor, batch_size=2, **options
        ),
    )
    keys, captions = utterances["utterance_id"].tolist(), utterances["caption"].tolist()
    store(
        "text_embeddings",
        text_embedding_stream(keys, captions, clip, processor.tokenizer, batch_size=3, **options),
    )
    pipe = StableDiffusionPipeline.from_pretrained(
        stand_in("diffusion"), safety_checker=None, requires_safety_checker=False
    )
    store(
        "prompt_targets",
        prompt_embedding_stream(
            keys, captions, pipe.text_encoder, pipe.tokenizer, batch_size=4, **options
        ),
    )
    distributed.wait_for_everyone()  # as the Kedro hook does after every save
    speech = ArrayStore(workdir / "reference" / "speech_features")  # the same input for all
    adapter = SpeechPromptAdapter.from_pretrained(workdir / "adapter")
    images = generation_stream(
        pipe,
        adapter,
        speech,
        utterances.head(3),
        seed=0,
        steps=3,
        guidance_scale=6.0,
        batch_size=1,
        channels_last=True,
        compile=True,  # skipped on CPU
        **options,
    )
    MainProcessDataset(ImageCollectionDataset(filepath=str(out / "images"))).save(images)
    weights = train_both(out)
    if distributed.is_main_process():
        torch.save(weights, out / "weights.pt")
        (out / "processes.txt").write_text(str(distributed.num_processes()))


# --------------------------------------------------------------------------- the tests
@pytest.fixture
def one_thread():
    """Tiny models, compared bit for bit: one thread, as each launched process has."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The work once in this process (the reference) and once under two processes."""
    workdir = tmp_path_factory.mktemp("distributed")
    write_inputs(workdir)
    threads = torch.get_num_threads()
    try:
        work(workdir, workdir / "reference")
    finally:
        torch.set_num_threads(threads)
    done = launch([__file__, str(workdir), str(workdir / "two")], cwd=PROJECT_ROOT)
    assert (workdir / "two" / "processes.txt").read_text() == "2"
    return workdir / "reference", workdir / "two", done


@pytest.mark.slow
def test_sharded_features_equal_one_process(runs):

    reference, two, _ = runs
    for name in ("speech_features", "image_embeddings", "text_embeddings", "prompt_targets"):
        one, many = ArrayStore(reference / name), ArrayStore(two / name)
        assert many.keys == one.keys, name
        assert many.meta == one.meta, name
        for array in one.names:
            assert np.array_equal(many[array], one[array]), (name, array)


@pytest.mark.slow
def test_sharded_generation_equals_one_process(runs):

    reference, two, _ = runs
    one, many = ImageCollection(reference / "images"), ImageCollection(two / "images")
    pd.testing.assert_frame_equal(many.index, one.index)
    assert len(one.index) == 6  # 3 utterances x (speech, text)
    for file in one.index["file"]:
        assert np.array_equal(np.asarray(many.image(file)), np.asarray(one.image(file))), file


@pytest.mark.slow
def test_ddp_training_matches_one_process_and_process_0_alone_saves(runs):
    reference, two, _ = runs
    one, many = torch.load(reference / "weights.pt"), torch.load(two / "weights.pt")
    for model in ("speechclip", "adapter"):
        for key, expected in one[model].items():
            keep = torch.ones(len(expected) if expected.ndim else 1, dtype=torch.bool)
            if key.endswith("in_proj_bias"):
                # [query | key | value] biases: the key bias has no true gradient (softmax
                # ignores a shift), so Adam turns rounding into steps; compare the others
                keep[len(keep) // 3 : 2 * len(keep) // 3] = False
            torch.testing.assert_close(
                many[model][key].reshape(len(keep), -1)[keep],
                expected.reshape(len(keep), -1)[keep],
                atol=1e-6,
                rtol=1e-5,
                msg=key,
            )
    writes = (two / "checkpoint_writes.log").read_text().split()
    assert set(writes) == {"0"}  # process 1 never wrote a checkpoint
    assert len(writes) == len((reference / "checkpoint_writes.log").read_text().split())
    for model in ("speechclip", "adapter"):
        folder = two / "checkpoints" / model
        assert [p.name for p in folder.iterdir()] == ["checkpoint.pt"]  # no temporary left


# --------------------------------------------------------------------------- speed options
def test_speed_options_are_accepted_on_cpu(one_thread):
    """SDPA attention is every model's default; channels-last and ``compile`` are CUDA-only
    options that a CPU run accepts and skips (same images)."""
    torch.set_num_threads(1)
    for model in (HubertModel, CLIPModel):
        name = "speech_encoder" if model is HubertModel else "clip"
        assert model.from_pretrained(stand_in(name)).config._attn_implementation == "sdpa"
    images = []
    for fast in (False, True):
        pipe = StableDiffusionPipeline.from_pretrained(
            stand_in("diffusion"), safety_checker=None, requires_safety_checker=False
        )
        device, dtype = prepare_pipeline(pipe, channels_last=fast, compile=fast)
        assert (device.type, dtype) == ("cpu", torch.float32)
        assert attention_backends(pipe) == {"AttnProcessor2_0"}  # F.scaled_dot_product_attention
        assert not hasattr(pipe.unet, "_orig_mod")  # not compiled on CPU
        weight = pipe.unet.conv_in.weight
        assert weight.is_contiguous()  # channels-last skipped on CPU
        out = pipe(prompt=["a red circle ."], generator=_generators([1]), num_inference_steps=3)
        images.append(np.asarray(out.images[0]).astype(int))
    assert np.array_equal(images[0], images[1])


# --------------------------------------------------------------------------- kedro run
@pytest.fixture
def kedro_project(tmp_path, corpus, copy_project):
    stand_ins = tuple(f"06_models/{name}" for name in ("speech_encoder", "clip", "diffusion"))
    project = copy_project(tmp_path / "project", ("01_raw/models", *stand_ins))
    random_adapter(
        project / "data/06_models/speech_adapter/2000-01-01T00.00.00.000Z/speech_adapter"
    )
    return project, corpus


@pytest.mark.slow
def test_kedro_run_on_two_processes_writes_one_version_that_both_load(kedro_project, one_thread):
    project, corpus = kedro_project
    # 12 utterances in HuBERT batches of 5 and 2 test utterances one by one: both processes
    # compute a share of the features and of the images
    params = (
        f"corpus_root={corpus},features.speech_batch_size=5,"
        "generation.batch_size=1,generation.steps=3,ingestion.min_split_utterances.train=1"
    )
    run = ["-m", "kedro", "run", "--pipelines", "ingestion,audio,features,generation"]
    done = launch([*run, "--params", params], cwd=project)
    log = done.stdout + done.stderr
    assert "Process 1 of 2 of run" in log

    data = project / "data"
    outputs = {
        "02_intermediate/utterances.parquet",
        "03_primary/hubert_inputs",
        "04_feature/speech_features",
        "04_feature/image_embeddings",
        "04_feature/text_embeddings",
        "04_feature/prompt_targets",
        "07_model_output/generated_images",
    }
    versions = {name: sorted(p.name for p in (data / name).iterdir()) for name in outputs}
    assert all(len(v) == 1 for v in versions.values()), versions  # one run, one version
    assert len({v[0] for v in versions.values()}) == 1  # all of the same (rank 0's) run
    assert f"of run {versions['04_feature/speech_features'][0]}" in log

    def latest(name: str) -> Path:
        return data / name / versions[name][0] / Path(name).name

    # what the two processes wrote equals one process computing it from the same inputs
    # (with their one thread each: the summation order then matches)
    torch.set_num_threads(1)
    loader = OmegaConfigLoader(str(project / "conf"), base_env="base", default_run_env="local")
    parameters = loader["parameters"]
    stream = speech_feature_stream(
        HubertInputs(latest("03_primary/hubert_inputs")),
        HubertModel.from_pretrained(stand_in("speech_encoder")),
        segments=parameters["features"]["segments"],
        batch_size=5,
    )
    expected = np.concatenate([block["layers"] for _, block in stream.blocks])
    written = ArrayStore(latest("04_feature/speech_features"))
    assert written.keys == list(stream.keys)
    assert np.array_equal(written["layers"], expected)

    images = ImageCollection(latest("07_model_output/generated_images"))
    utterances = pd.read_parquet(latest("02_intermediate/utterances.parquet"))
    test = utterances[utterances["split"] == "test"]
    assert len(images.index) == 2 * len(test) >= 4
    one = generation_stream(
        StableDiffusionPipeline.from_pretrained(
            stand_in("diffusion"), safety_checker=None, requires_safety_checker=False
        ),
        SpeechPromptAdapter.from_pretrained(
            project / "data/06_models/speech_adapter/2000-01-01T00.00.00.000Z/speech_adapter"
        ),
        written,
        test,
        seed=parameters["seed"],
        steps=3,
        guidance_scale=parameters["generation"]["guidance_scale"],
        batch_size=1,
    )
    for (row, image), file in zip(one, images.index["file"], strict=True):
        assert row["file"] == file
        assert np.array_equal(np.asarray(images.image(file)), np.asarray(image)), file


if __name__ == "__main__":  # the worker: `accelerate launch tests/test_distributed.py WORK OUT`
    work(Path(sys.argv[1]), Path(sys.argv[2]))
