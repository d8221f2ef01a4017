"""Every synth.py step on the FishCam-AT sample with the tiny model, then training with the set.

This is the sequence of `make synth-demo`, run in process and in temporary folders."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import compose_config

from fishaug.synth.provenance import read_provenance
from fishaug.synth.steps import run_step
from fishaug.training import train


@pytest.mark.slow
@pytest.mark.fishcam
def test_synth_steps_on_fishcam(fishcam_root, tmp_path, train_config):
    data = ["dataset=fishcam", f"dataset.root={fishcam_root}", "dataset.download=false"]
    base = ["synth/base=tiny", "name=demo", "generate.sampler.num_inference_steps=2"] + data
    steps = [
        ["step=tiny_model"],
        [
            "step=prepare",
            "prepare.per_class=4",
            "prepare.auto_caption.model=${paths.data_dir}/synth/tiny-captioner",
        ],
        [
            "step=lora",
            "lora.max_steps=4",
            "lora.checkpoint_every=2",
            "lora.gradient_accumulation_steps=1",
        ],
        [
            "step=dreambooth",
            "dreambooth.max_steps=2",
            "dreambooth.num_class_images=1",
            "dreambooth.class_num_inference_steps=2",
            "dreambooth.checkpoint_every=null",
        ],
        ["step=merge"],
        ["step=grid", "grid.seeds=[0]", "grid.scales=[1.0]"],
        [
            "step=generate",
            "generate.per_class=4",
            "generate.models=[{name:lora,lora:${lora.output_dir}},{name:merged,path:${merge.output_dir}/lora-x0.8}]",
        ],
    ]
    cfg = None
    for overrides in steps:
        cfg = compose_config("synth", base + overrides, tmp_path / "synth")
        run_step(cfg)
    work_dir = cfg.work_dir

    classifier = train(
        train_config(data + ["debug=few_batches"], output_dir=tmp_path / "classifier")
    )
    filter_cfg = compose_config(
        "synth",
        base + ["step=filter", f"filter.checkpoint={classifier['best_checkpoint']}"],
        tmp_path / "synth",
    )
    kept = run_step(filter_cfg)
    assert len(kept) == 7 * 2 * 4 // 2

    provenance = read_provenance(f"{work_dir}/filtered")
    split = pd.read_csv(tmp_path / "classifier" / "split.csv", dtype={"video": str})
    held_out = set(split.loc[split["subset"] != "train", "video"])
    assert not set(provenance["videos"]) & held_out

    metrics = train(
        train_config(
            data
            + [
                "debug=few_batches",
                "aug=synthetic",
                f"aug.sets=[{work_dir}/filtered]",
                "aug.inner=randaugment",
            ],
            output_dir=tmp_path / "with_synthetic",
        )
    )
    assert "test/f1_macro" in metrics
    saved = pd.read_csv(tmp_path / "with_synthetic" / "split.csv")
    assert (saved["source"] == "demo-filtered").sum() == len(kept)
