"""Compare training runs: tables, plots, label errors and one self-contained HTML page.

python report.py runs=logs/train/multiruns/<sweep>
python report.py runs='[logs/train/multiruns/<a>,logs/train/multiruns/<b>]' output_dir=reports/ab
"""

import hydra
from omegaconf import DictConfig

from fishaug.report.build import build_report
from fishaug.utils.resolvers import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="configs", config_name="report")
def main(cfg: DictConfig) -> None:
    build_report(cfg)


if __name__ == "__main__":
    main()
