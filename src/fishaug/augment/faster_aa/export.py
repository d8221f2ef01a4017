"""Writing a searched policy: Albumentations pipeline files, readable summaries, loss plots."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import albumentations as A
import lightning as L
import matplotlib
import pandas as pd

from fishaug.augment.faster_aa.module import FasterAutoAugmentSearch
from fishaug.augment.faster_aa.policy import Policy

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

log = logging.getLogger(__name__)

POLICY_FILE = "policy.json"
LOSSES_FILE = "search_losses"


def summary_path(policy_path: Path) -> Path:
    """Return the summary file written beside a policy file: ``<stem>_summary.txt``."""
    return policy_path.with_name(f"{policy_path.stem}_summary.txt")


def save_policy(policy: Policy, path: str | Path, header: str = "") -> Path:
    """Save ``policy`` as an Albumentations pipeline (``A.save``, JSON) and a summary beside it.

    Returns the path of the pipeline file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    A.save(policy.to_albumentations(), str(path), data_format="json")
    summary_path(path).write_text(summarize_policy(policy, header))
    return path


def summarize_policy(policy: Policy, header: str = "", per_stage: int = 2) -> str:
    """Describe the strongest operations of a policy in plain text.

    The first table ranks operations by how often a stage applies them: the mean over all
    stages of ``p = weight * probability``, the largest ``p`` and the value of the operation in
    the stage with that largest ``p``. Then each sub-policy lists the ``per_stage`` most likely
    operations of each stage.
    """
    totals = {name: {"p": 0.0, "max_p": -1.0, "value": None} for name in policy.operation_names}
    stage_lines = []
    applied = 0.0
    for index in range(policy.num_sub_policies):
        stage_lines.append(f"sub-policy {index}:")
        for stage in range(policy.num_stages):
            choices = policy.stage_choices(index, stage)
            for operation, value, p in choices:
                total = totals[operation.name]
                total["p"] += p
                if p > total["max_p"]:
                    total["max_p"], total["value"] = p, value
            none = 1 - sum(p for _, _, p in choices)
            applied += 1 - none
            ranked = sorted(choices, key=lambda choice: -choice[2])[:per_stage]
            text = ", ".join(f"{op.describe(value)} (p {p:.2f})" for op, value, p in ranked)
            stage_lines.append(f"  stage {stage + 1}: {text}; none (p {none:.2f})")

    lines = [header.rstrip(), ""] if header else []
    lines.append(
        f"{policy.num_sub_policies} sub-policies of {policy.num_stages} stages; an image gets "
        f"{applied / policy.num_sub_policies:.2f} operations on average."
    )
    lines += ["", "Operations by how often a stage applies them:", ""]
    lines.append(f"{'operation':<14}{'mean p':>8}{'max p':>8}  value where p is largest")
    operations = dict(zip(policy.operation_names, policy.operations, strict=True))
    num_stages = policy.num_sub_policies * policy.num_stages
    for name, total in sorted(totals.items(), key=lambda item: -item[1]["p"]):
        value = total["value"]
        text = "" if value is None else operations[name].format_value(value)
        lines.append(f"{name:<14}{total['p'] / num_stages:>8.3f}{total['max_p']:>8.3f}  {text}")
    lines += ["", "Most likely operations per stage (p = weight * probability):", ""]
    return "\n".join(lines + stage_lines) + "\n"


def write_losses(history: Sequence[dict[str, float]], output_dir: str | Path) -> Path | None:
    """Write the epoch means of the search losses to ``search_losses.csv`` and ``.png``.

    Returns the CSV path, or None when no epoch finished.
    """
    if not history:
        return None
    output_dir = Path(output_dir)
    table = pd.DataFrame(history)
    csv_path = output_dir / f"{LOSSES_FILE}.csv"
    table.to_csv(csv_path, index=False)

    figure, (losses, distance) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (
        ("task_loss", "classification loss (x task factor)"),
        ("critic_loss", "critic loss"),
        ("policy_loss", "policy loss"),
    ):
        losses.plot(table["epoch"], table[key], marker=".", label=label)
    losses.set_xlabel("epoch")
    losses.set_ylabel("loss (epoch mean)")
    losses.legend()
    distance.plot(table["epoch"], table["wasserstein"], marker=".", color="tab:purple")
    distance.set_xlabel("epoch")
    distance.set_ylabel("mean D(real) - mean D(augmented)")
    distance.set_title("Wasserstein estimate")
    for axis in (losses, distance):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.suptitle("Faster AutoAugment search")
    figure.tight_layout()
    figure.savefig(output_dir / f"{LOSSES_FILE}.png", dpi=120)
    plt.close(figure)
    return csv_path


class PolicyExport(L.Callback):
    """Save the policy at chosen epochs and after the last one, and plot the losses at the end.

    Files: ``policies/epoch_<NNN>.json`` for each epoch in ``export_epochs`` that the search
    reaches, ``policy.json`` after the last epoch, each with a ``*_summary.txt``, and
    ``search_losses.csv|png``.
    """

    def __init__(self, output_dir: str | Path, export_epochs: Sequence[int] = (), header: str = ""):
        self.output_dir = Path(output_dir)
        self.export_epochs = sorted({int(e) for e in export_epochs})
        self.header = header
        self.written: list[Path] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: FasterAutoAugmentSearch) -> None:
        epoch = trainer.current_epoch + 1
        if epoch in self.export_epochs:
            path = self.output_dir / "policies" / f"epoch_{epoch:03d}.json"
            self._save(pl_module, path, epoch, trainer.max_epochs)

    def on_train_end(self, trainer: L.Trainer, pl_module: FasterAutoAugmentSearch) -> None:
        epoch = len(pl_module.history)
        self._save(pl_module, self.output_dir / POLICY_FILE, epoch, trainer.max_epochs)
        losses = write_losses(pl_module.history, self.output_dir)
        if losses is not None:
            log.info("Search losses: %s and %s", losses, losses.with_suffix(".png"))

    def _save(
        self, pl_module: FasterAutoAugmentSearch, path: Path, epoch: int, max_epochs: int
    ) -> None:
        header = f"Faster AutoAugment policy after epoch {epoch} of {max_epochs}.\n{self.header}"
        save_policy(pl_module.policy, path, header)
        self.written.append(path)
        log.info(
            "Saved the policy after epoch %d to %s (summary %s)", epoch, path, summary_path(path)
        )
