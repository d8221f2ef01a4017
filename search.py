"""Search an augmentation policy with Faster AutoAugment on the training split.

python search.py dataset=fishcam dataset.root=/path/to/fishcam_at data.fold=0
python train.py aug=faster_aa aug.policy=logs/search/runs/<run>/policy.json data.fold=0
"""

import hydra
from omegaconf import DictConfig

from fishaug.augment.faster_aa.search import search
from fishaug.utils.resolvers import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="configs", config_name="search")
def main(cfg: DictConfig) -> None:
    search(cfg)


if __name__ == "__main__":
    main()
