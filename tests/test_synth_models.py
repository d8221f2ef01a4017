"""The diffusion steps on a tiny random Stable Diffusion built in code: LoRA, DreamBooth, merge,
grid, generate, filter, and training with the synthetic set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import compose_config, write_image_dataset
from PIL import Image
from safetensors.torch import save_file
from transformers import CLIPTextModel

from fishaug.errors import ConfigError, DataError
from fishaug.synth.captioning import ImageCaptioner
from fishaug.synth.dreambooth import DreamBoothSettings, train_dreambooth
from fishaug.synth.filtering import filter_set
from fishaug.synth.generate import ModelSpec, SamplerSettings, generate_set, model_prompts
from fishaug.synth.grid import find_candidates, make_grids
from fishaug.synth.lora import LoraSettings, train_lora
from fishaug.synth.merge import MergeRecipe, merge, parse_recipes
from fishaug.synth.models import apply_memory_options, load_lora, load_pipeline
from fishaug.synth.prepare import build_finetune_set, run_prepare
from fishaug.synth.provenance import read_provenance
from fishaug.synth.species import class_prompts
from fishaug.synth.tiny import (
    build_tiny_captioner,
    build_tiny_pipeline,
    build_tiny_upscaler,
    run_tiny_model,
)
from fishaug.synth.upscale import DiffusionUpscaler
from fishaug.training import train

SPECIES = [
    "+species.species0={token: zqa, common_name: red fish, latin_name: Rubra rubra}",
    "+species.species1={token: zqb, common_name: green fish, latin_name: Viridis viridis}",
    "+species.species2={token: zqc, common_name: blue fish, latin_name: Caerulea caerulea}",
]
SAMPLER = SamplerSettings(num_inference_steps=2, guidance_scale=2.0, resolution=32)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> dict:
    """A small image set, the tiny model and a fine-tuning set made by the prepare step."""
    root = tmp_path_factory.mktemp("synth")
    manifest = write_image_dataset(root / "images")
    data = [
        "dataset=manifest",
        f"dataset.path={manifest}",
        "data.test_per_class=1",
        "data.num_folds=3",
    ]
    cfg = compose_config(
        "synth",
        ["step=prepare", "synth/base=tiny", "prepare.per_class=3", "tiny_model.upscaler_dir=null"]
        + ["tiny_model.captioner_dir=null"]
        + data
        + SPECIES,
        root / "run",
    )
    base = run_tiny_model(cfg)
    run_prepare(cfg)
    return {"root": root, "base": str(base), "finetune_set": cfg.prepare.output_dir, "data": data}


def test_prepare_upscales_and_captions_small_crops(tmp_path):
    rows = []
    for i in range(3):
        path = tmp_path / f"small_{i}.png"
        Image.fromarray(np.full((8, 12, 3), 60 * i, dtype=np.uint8)).save(path)
        rows.append({"path": str(path), "label": "perch", "video": f"v{i}"})
    prompts = class_prompts(["perch"], "a photo of {token} {common_name}", "{common_name}")
    upscaler = DiffusionUpscaler(
        str(build_tiny_upscaler(tmp_path / "up")), CPU, num_inference_steps=2
    )
    captioner = ImageCaptioner(str(build_tiny_captioner(tmp_path / "cap")), CPU, max_new_tokens=3)

    metadata = build_finetune_set(
        pd.DataFrame(rows),
        tmp_path / "set",
        prompts,
        resolution=32,
        per_class=2,
        upscaler=upscaler,
        captioner=captioner,
    )

    images = [Image.open(tmp_path / "set" / name).convert("RGB") for name in metadata["file_name"]]
    assert [image.size for image in images] == [(32, 32), (32, 32)]
    prefix = prompts["perch"].prefix
    expected = [f"{prefix}, {text}" if text else prefix for text in captioner(images)]
    assert metadata["text"].tolist() == expected
    with pytest.raises(ConfigError, match="could not be loaded as a captioning model"):
        ImageCaptioner(str(tmp_path / "up"), CPU)


def lora_settings(work, output: Path, **kwargs) -> LoraSettings:
    values = {
        "data_dir": work["finetune_set"],
        "output_dir": str(output),
        "resolution": 32,
        "max_steps": 2,
        "gradient_accumulation_steps": 1,
        "learning_rate": 1e-2,
        "log_every": 1,
        **kwargs,
    }
    return LoraSettings.from_config(values, "lora")


def sample(pipe, prompt: str = "a photo of zqa red fish") -> np.ndarray:
    generator = torch.Generator().manual_seed(0)
    return pipe(
        prompt, num_inference_steps=2, height=32, width=32, generator=generator, output_type="np"
    ).images


@pytest.fixture(scope="module")
def lora_dir(work) -> Path:
    """A LoRA trained for two steps on UNet and text encoder, alpha twice the rank."""
    output = work["root"] / "lora"
    settings = lora_settings(
        work, output, train_text_encoder=True, rank=4, alpha=8, checkpoint_every=1
    )
    summary = train_lora(settings, work["base"], local_files_only=True)
    assert summary["steps"] == 2
    return output


def test_lora_saves_adapter_that_changes_outputs(work, lora_dir):
    summary = json.loads((lora_dir / "finetune.json").read_text())
    assert np.isfinite(summary["final_loss"])
    assert summary["steps_per_s"] > 0
    assert (lora_dir / "pytorch_lora_weights.safetensors").is_file()
    assert (lora_dir / "checkpoint-1" / "pytorch_lora_weights.safetensors").is_file()
    assert read_provenance(lora_dir)["videos"] == read_provenance(work["finetune_set"])["videos"]

    pipe = apply_memory_options(load_pipeline(work["base"], "base.model"), {}, CPU, "memory")
    before = sample(pipe)
    load_lora(pipe, lora_dir, 1.0, "lora")
    assert pipe.unet.peft_config["fish"].lora_alpha == 8
    assert "fish" in pipe.text_encoder.peft_config
    assert np.abs(sample(pipe) - before).max() > 1e-4


def test_lora_v_prediction_trains(work, tmp_path):
    base = build_tiny_pipeline(tmp_path / "tiny-v", prediction_type="v_prediction")
    settings = lora_settings(work, tmp_path / "lora", learning_rate=1e-4)
    summary = train_lora(settings, str(base), local_files_only=True)
    assert np.isfinite(summary["final_loss"])
    assert json.loads((tmp_path / "lora" / "finetune.json").read_text())["steps"] == 2


def test_lora_rejects_bad_settings(work, tmp_path):
    with pytest.raises(ConfigError, match=r"lora.rank=0 is out of range"):
        lora_settings(work, tmp_path / "out", rank=0)
    with pytest.raises(ConfigError, match=r"lora has unknown key\(s\) \['ranks'\]"):
        lora_settings(work, tmp_path / "out", ranks=4)
    with pytest.raises(ConfigError, match=r"lora.mixed_precision=fp16 needs a CUDA GPU"):
        train_lora(
            lora_settings(work, tmp_path / "out", mixed_precision="fp16", device="cpu"),
            work["base"],
        )


def test_dreambooth_two_steps_with_prior(work, tmp_path):
    settings = DreamBoothSettings.from_config(
        {
            "data_dir": work["finetune_set"],
            "output_dir": str(tmp_path / "db"),
            "class_data_dir": str(tmp_path / "class_images"),
            "resolution": 32,
            "max_steps": 2,
            "learning_rate": 1e-3,
            "num_class_images": 1,
            "class_num_inference_steps": 2,
        },
        "dreambooth",
    )
    summary = train_dreambooth(settings, work["base"], local_files_only=True)

    assert np.isfinite(summary["final_loss"])
    assert all("prior_loss" in step for step in summary["history"])
    assert len(list((tmp_path / "class_images").glob("*/class_*.png"))) == 3
    tuned = load_pipeline(str(tmp_path / "db"), "dreambooth")
    base = load_pipeline(work["base"], "base")
    changed = [
        not torch.equal(a, b)
        for a, b in zip(tuned.unet.parameters(), base.unet.parameters(), strict=True)
    ]
    assert any(changed)
    assert (tmp_path / "db" / "prompts.json").is_file()


def test_merge_weighted_sum_and_lora(work, lora_dir, tmp_path):
    other = build_tiny_pipeline(tmp_path / "other", seed=1)
    mix = merge(
        MergeRecipe("mix", ((work["base"], 0.6), (str(other), 0.4))),
        tmp_path,
        local_files_only=True,
    )
    merged = load_pipeline(str(mix), "merged").unet.state_dict()
    first = load_pipeline(work["base"], "a").unet.state_dict()
    second = load_pipeline(str(other), "b").unet.state_dict()
    key = "conv_in.weight"
    assert torch.allclose(merged[key], 0.6 * first[key] + 0.4 * second[key], atol=1e-6)

    recipes = parse_recipes(
        [{"name": "lora-x0.8", "loras": [{"path": str(lora_dir), "scale": 0.8}]}], work["base"]
    )
    fused = apply_memory_options(
        load_pipeline(str(merge(recipes[0], tmp_path)), "fused"), {}, CPU, "m"
    )
    reference = apply_memory_options(load_pipeline(work["base"], "base"), {}, CPU, "m")
    load_lora(reference, lora_dir, 0.8, "lora")
    assert np.abs(sample(fused) - sample(reference)).max() < 1e-4
    assert read_provenance(tmp_path / "lora-x0.8")["videos"] == read_provenance(lora_dir)["videos"]


def test_merge_rejects_different_bases(work, tmp_path):
    pipe = load_pipeline(work["base"], "base")
    config = pipe.text_encoder.config
    config.num_hidden_layers = 3
    pipe.text_encoder = CLIPTextModel(config)
    pipe.save_pretrained(tmp_path / "deeper")

    recipe = MergeRecipe("bad", ((work["base"], 0.5), (str(tmp_path / "deeper"), 0.5)))
    with pytest.raises(
        ConfigError, match="the text_encoder of .* does not match the first checkpoint"
    ):
        merge(recipe, tmp_path)
    with pytest.raises(ConfigError, match="nothing to merge"):
        parse_recipes([{"name": "alone"}], work["base"])


def test_generate_two_per_class_and_resume(work, lora_dir, tmp_path):
    models = [ModelSpec("lora", work["base"], str(lora_dir), 0.8)]
    prompts_of = {"lora": model_prompts(models[0], None, {}, "generate.classes")}
    rows = generate_set(models, prompts_of, tmp_path / "gen", SAMPLER, per_class=2, set_id="set1")

    assert len(rows) == 6
    manifest = pd.read_csv(tmp_path / "gen" / "manifest.csv")
    assert {"path", "label", "video", "source", "model", "seed", "prompt"} <= set(manifest.columns)
    assert set(manifest["video"]) == {"set1"}
    assert sorted(manifest["seed"].unique()) == [0, 1]
    assert manifest["prompt"].str.startswith("a photo of zq").all()
    assert read_provenance(tmp_path / "gen")["videos"] == read_provenance(lora_dir)["videos"]

    log_lines = (tmp_path / "gen" / "generated.jsonl").read_text().splitlines()
    generate_set(models, prompts_of, tmp_path / "gen", SAMPLER, per_class=2, set_id="set1")
    assert (tmp_path / "gen" / "generated.jsonl").read_text().splitlines() == log_lines

    changed = SamplerSettings(num_inference_steps=3, resolution=32)
    with pytest.raises(ConfigError, match="made with other settings"):
        generate_set(models, prompts_of, tmp_path / "gen", changed, per_class=2, set_id="set1")


def test_generate_rejects_black_images(work, tmp_path):
    pipe = load_pipeline(work["base"], "base")
    with torch.no_grad():
        pipe.vae.decoder.conv_out.weight.zero_()
        pipe.vae.decoder.conv_out.bias.fill_(-1.0)
    pipe.save_pretrained(tmp_path / "black")
    spec = ModelSpec("black", str(tmp_path / "black"))
    fallback = {
        "template": "{token} {common_name}",
        "class_template": "{common_name}",
        "species": None,
    }
    prompts_of = {"black": model_prompts(spec, ["perch"], fallback, "generate.classes")}

    with pytest.raises(DataError, match=r"2 of 2 generated images were black or blank"):
        generate_set([spec], prompts_of, tmp_path / "gen", SAMPLER, per_class=2)
    assert len(list((tmp_path / "gen" / "rejected").rglob("*.png"))) == 2
    assert not (tmp_path / "gen" / "manifest.csv").exists()


def test_generate_fails_without_lora_weights(work, tmp_path):
    (tmp_path / "empty").mkdir()
    save_file({}, str(tmp_path / "hollow.safetensors"))
    cases = [
        (tmp_path / "empty", "contains no LoRA weights"),
        (tmp_path / "missing", "does not exist"),
        (tmp_path / "hollow.safetensors", "contains no tensors"),
    ]
    for lora, message in cases:
        spec = ModelSpec("lora", work["base"], str(lora))
        prompts_of = {
            "lora": model_prompts(
                ModelSpec("x", work["base"]),
                ["perch"],
                {"template": "{token}", "class_template": "{token}"},
                "c",
            )
        }
        with pytest.raises(ConfigError, match=message):
            generate_set([spec], prompts_of, tmp_path / f"gen-{lora.name}", SAMPLER, per_class=1)


def test_load_pipeline_reports_missing_weights(tmp_path):
    with pytest.raises(ConfigError, match=r"are not on this machine and could not be downloaded"):
        load_pipeline("nobody-here/no-such-model", "base.model", local_files_only=True)
    with pytest.raises(ConfigError, match="is not a diffusers pipeline folder"):
        load_pipeline(str(tmp_path), "base.model")
    with pytest.raises(ConfigError, match=r"does not exist, and it is not a Hub id"):
        load_pipeline(str(tmp_path / "a" / "b" / "c"), "base.model")


def test_grid_compares_checkpoints_and_scales(work, lora_dir, tmp_path):
    candidates = find_candidates(lora_dir, work["base"], [0.5, 1.0])
    assert [c.title for c in candidates] == [
        "checkpoint-1 x0.5",
        "checkpoint-1 x1",
        "final x0.5",
        "final x1",
    ]
    prompts_of = {
        c.spec.name: model_prompts(c.spec, ["species0"], {}, "grid.classes") for c in candidates
    }

    written = make_grids(candidates, prompts_of, [0, 1], SAMPLER, tmp_path / "grid", cell_size=32)

    assert [p.name for p in written] == ["grid_species0.png"]
    assert len(pd.read_csv(tmp_path / "grid" / "grid.csv")) == 4


def test_filter_then_train_with_synthetic_set(work, lora_dir, tmp_path, train_config):
    data = work["data"] + ["trainer.max_epochs=1"]
    classifier = train(train_config(data, output_dir=tmp_path / "classifier"))
    checkpoint = Path(classifier["best_checkpoint"])

    models = [ModelSpec("lora", work["base"], str(lora_dir))]
    prompts_of = {"lora": model_prompts(models[0], None, {}, "generate.classes")}
    generate_set(models, prompts_of, tmp_path / "gen", SAMPLER, per_class=4, set_id="set1")
    kept = filter_set(
        tmp_path / "gen",
        tmp_path / "filtered",
        checkpoint,
        method="knn",
        k=2,
        keep_fraction=0.5,
        set_id="set1-f",
    )

    assert kept.groupby("label").size().tolist() == [2, 2, 2]
    scores = pd.read_csv(tmp_path / "filtered" / "scores.csv")
    assert len(scores) == 12
    assert (
        scores.groupby("label")["score"].max().tolist()
        == kept.groupby("label")["score"].max().tolist()
    )
    provenance = read_provenance(tmp_path / "filtered")
    split = pd.read_csv(checkpoint.parents[1] / "split.csv")
    assert set(split.loc[split["subset"] == "train", "video"]) <= set(provenance["videos"])

    run = train_config(
        data + ["aug=synthetic", f"aug.sets=[{tmp_path / 'filtered'}]", "aug.inner=randaugment"],
        output_dir=tmp_path / "with_synthetic",
    )
    metrics = train(run)
    assert np.isfinite(metrics["test/f1_macro"])
    saved = pd.read_csv(tmp_path / "with_synthetic" / "split.csv")
    synthetic = saved[saved["source"] == "set1-f"]
    assert len(synthetic) == 6
    assert set(synthetic["subset"]) == {"train"}

    other_fold = train_config(
        data + ["data.fold=1", "aug=synthetic", f"aug.sets=[{tmp_path / 'filtered'}]"],
        output_dir=tmp_path / "other_fold",
    )
    with pytest.raises(DataError, match="holds out for validation or testing"):
        train(other_fold)


@pytest.mark.gpu
@pytest.mark.parametrize(("mixed_precision", "dtype"), [("fp16", "float16"), ("bf16", "bfloat16")])
def test_half_precision_on_gpu(work, tmp_path, mixed_precision, dtype):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    settings = lora_settings(
        work, tmp_path / "lora", mixed_precision=mixed_precision, device="cuda"
    )
    summary = train_lora(settings, work["base"], local_files_only=True)
    assert np.isfinite(summary["final_loss"])

    models = [ModelSpec("lora", work["base"], str(tmp_path / "lora"))]
    prompts_of = {"lora": model_prompts(models[0], None, {}, "generate.classes")}
    rows = generate_set(
        models, prompts_of, tmp_path / "gen", SAMPLER, per_class=2, device="cuda", dtype=dtype
    )
    assert len(rows) == 6
