"""Train and test one configuration, or a grid of them with -m (Hydra multirun).

python train.py aug=randaugment aug.n=2 aug.m=9
python train.py -m aug=randaugment aug.n=1,2,3 aug.m=5,7,9
"""

import hydra
from omegaconf import DictConfig

from fishaug.training import train
from fishaug.utils.resolvers import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    return metrics.get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
