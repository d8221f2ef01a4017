"""List the jobs of experiment sweeps, check them and estimate their cost, without training.

python plan.py experiment=baseline,randaugment
python plan.py experiment=randaugment preset=cpu --csv plan.csv
python plan.py experiment=protocol --check-data data/study/default/splits.json

Overrides are those of ``python train.py -m``; each value of ``experiment=`` is planned as its
own multirun. The exit status is 1 when a job does not compose or sweeps an ``aug`` key that
its augmentation does not have, or when --check-data cannot build a split.
"""

import argparse
import json
import logging
import sys
from pathlib import Path

from fishaug.errors import ConfigError, DataError
from fishaug.utils.plan import check_splits, log_plan, plan_sweeps
from fishaug.utils.resolvers import register_resolvers

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

log = logging.getLogger("plan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("overrides", nargs="*", help="overrides of python train.py -m")
    parser.add_argument("--csv", type=Path, help="write one row per job to this CSV file")
    parser.add_argument(
        "--check-data",
        type=Path,
        metavar="JSON",
        help="also build every split the jobs use and write its sizes to this JSON file",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    register_resolvers()

    try:
        table = plan_sweeps(args.overrides, CONFIG_DIR)
        log_plan(table)
        if args.csv is not None:
            table.to_csv(args.csv, index=False)
            log.info("Job list written to %s", args.csv)
        if args.check_data is not None:
            splits = check_splits(args.overrides, CONFIG_DIR)
            args.check_data.parent.mkdir(parents=True, exist_ok=True)
            args.check_data.write_text(json.dumps(splits, indent=2))
            log.info("All %d splits can be built; sizes in %s", len(splits), args.check_data)
    except (ConfigError, DataError) as error:
        log.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
