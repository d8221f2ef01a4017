"""Turn fish-counter videos into fish crops and a manifest that train.py reads.

python prepare.py input_dir=videos/
python prepare.py input_dir=videos/ annotations=boxes.csv dataset_dir=data/my_counter
"""

import hydra
from omegaconf import DictConfig

from fishaug.ingest.pipeline import prepare
from fishaug.utils.resolvers import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="configs", config_name="prepare")
def main(cfg: DictConfig) -> None:
    prepare(cfg)


if __name__ == "__main__":
    main()
