"""Make synthetic training images with Stable Diffusion fine-tuned on the fish data, step by step.

python synth.py step=prepare                 # fine-tuning set from the training split
python synth.py step=lora                    # or step=dreambooth
python synth.py step=grid                    # compare checkpoints and LoRA scales
python synth.py step=generate
python synth.py step=filter filter.checkpoint=logs/train/runs/<run>/checkpoints/last.ckpt
python train.py aug=synthetic aug.sets=[data/synth/<name>/filtered] aug.inner=randaugment

The README's "Synthetic images with Stable Diffusion" section lists every step and option.
"""

import hydra
from omegaconf import DictConfig

from fishaug.synth.steps import run_step
from fishaug.utils.resolvers import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="configs", config_name="synth")
def main(cfg: DictConfig) -> None:
    run_step(cfg)


if __name__ == "__main__":
    main()
