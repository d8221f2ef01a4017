"""Evaluate a checkpoint on one subset of a split.

    python eval.py ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt \
        split_file=logs/train/runs/<run>/split.csv subset=test
"""

import hydra
from omegaconf import DictConfig

from fishaug.evaluate import evaluate
from fishaug.utils.resolvers import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
