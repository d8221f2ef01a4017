"""Per-class caption prefixes: a rare-token identifier, the common name and the Latin name.

DreamBooth (Ruiz et al., "Fine Tuning Text-to-Image Diffusion Models for Subject-Driven
Generation", CVPR 2023) binds a subject to a rare-token identifier, a short letter sequence that
the text encoder has seen little of, so fine-tuning does not have to overwrite a word with a
strong meaning. Here each species gets its own identifier; the common
and Latin names follow it so the prompt also carries what the base model learned about them.

The table is keyed by label with case, spaces, hyphens and underscores ignored, so the labels
``wels catfish``, ``wels_catfish`` and ``WelsCatfish`` find the same entry.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fishaug.errors import ConfigError, DataError

PROMPTS_FILE = "prompts.json"
TEMPLATE_FIELDS = ("token", "common_name", "latin_name", "label")


@dataclass(frozen=True)
class Species:
    """One row of the caption table."""

    token: str
    common_name: str
    latin_name: str


# NOTE: the identifiers are letter strings chosen to be unlikely English words; they were not
# checked against the CLIP tokenizer of a real checkpoint. Override them with species.<label>.token.
SPECIES: dict[str, Species] = {
    # The study's ten species.
    "eel": Species("zpx", "European eel", "Anguilla anguilla"),
    "nase": Species("qnx", "common nase", "Chondrostoma nasus"),
    "perch": Species("vtz", "European perch", "Perca fluviatilis"),
    "roach": Species("kxr", "common roach", "Rutilus rutilus"),
    "barbel": Species("xbq", "common barbel", "Barbus barbus"),
    "bleak": Species("jvq", "common bleak", "Alburnus alburnus"),
    "bream": Species("wqz", "common bream", "Abramis brama"),
    "carp": Species("zkv", "common carp", "Cyprinus carpio"),
    "welscatfish": Species("qwx", "wels catfish", "Silurus glanis"),
    "chub": Species("xjz", "European chub", "Squalius cephalus"),
    # The FishCam-AT species not listed above.
    "browntrout": Species("vqk", "brown trout", "Salmo trutta"),
    "burbot": Species("zjq", "burbot", "Lota lota"),
    "rainbowtrout": Species("kqz", "rainbow trout", "Oncorhynchus mykiss"),
}


@dataclass(frozen=True)
class ClassPrompts:
    """The prompts of one class.

    ``prefix`` names the class with its identifier, and fine-tuning captions and generation
    prompts start with it. ``class_prompt`` names it without the identifier, for DreamBooth's
    prior-preservation images.
    """

    label: str
    token: str
    common_name: str
    latin_name: str
    prefix: str
    class_prompt: str


def species_key(label: str) -> str:
    """Return the table key of a label: lower case, letters and digits only."""
    return re.sub(r"[^a-z0-9]", "", str(label).lower())


def class_prompts(
    labels: Iterable[str],
    template: str,
    class_template: str,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, ClassPrompts]:
    """Build the prompts of each label from the table and the two templates.

    Args:
        labels: class labels as they appear in the manifest.
        template: format string of the prefix, with fields from ``{token}``, ``{common_name}``,
            ``{latin_name}`` and ``{label}``.
        class_template: format string of the class prompt, with the same fields.
        overrides: per-label entries (all or some of ``token``, ``common_name``,
            ``latin_name``) that replace or extend the built-in table.

    Raises:
        ConfigError: a label has no table entry, an entry lacks a field, a template names an
            unknown field, or two classes share an identifier.
    """
    _check_template("caption.template", template)
    _check_template("caption.class_template", class_template)
    table = _merged_table(overrides or {})

    prompts: dict[str, ClassPrompts] = {}
    missing = []
    for label in sorted(set(labels)):
        entry = table.get(species_key(label))
        if entry is None:
            missing.append(label)
            continue
        fields = {**asdict(entry), "label": label}
        prompts[label] = ClassPrompts(
            label=label,
            token=entry.token,
            common_name=entry.common_name,
            latin_name=entry.latin_name,
            prefix=template.format(**fields),
            class_prompt=class_template.format(**fields),
        )
    if missing:
        example = missing[0]
        raise ConfigError(
            f"The caption table has no entry for class(es) {missing}; the table knows "
            f"{sorted(SPECIES)}. Add one per class on the command line, for example "
            f"'+species.{example}={{token: zqv, common_name: {example}, latin_name: Genus species}}'."
        )

    by_token: dict[str, list[str]] = {}
    for label, entry in prompts.items():
        by_token.setdefault(entry.token, []).append(label)
    shared = {token: names for token, names in by_token.items() if len(names) > 1}
    if shared:
        raise ConfigError(
            f"Classes share an identifier token: {shared}. Give each class its own "
            "species.<label>.token, or the fine-tuned model cannot tell them apart."
        )
    return prompts


def write_prompts(folder: str | Path, prompts: Mapping[str, ClassPrompts]) -> Path:
    """Write ``prompts.json`` (label to prompts) into ``folder``; return its path."""
    path = Path(folder) / PROMPTS_FILE
    path.write_text(json.dumps({k: asdict(v) for k, v in sorted(prompts.items())}, indent=2))
    return path


def read_prompts(folder: str | Path) -> dict[str, ClassPrompts] | None:
    """Read ``prompts.json`` from ``folder``; return None when the folder has none.

    Raises:
        DataError: the file exists but is not a prompts file.
    """
    path = Path(folder) / PROMPTS_FILE
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
        return {label: ClassPrompts(**entry) for label, entry in raw.items()}
    except (json.JSONDecodeError, TypeError, AttributeError) as error:
        raise DataError(f"'{path}' is not a valid prompts file: {error}.") from error


def _merged_table(overrides: Mapping[str, Mapping[str, Any]]) -> dict[str, Species]:
    table = dict(SPECIES)
    for label, fields in overrides.items():
        key = species_key(label)
        if not isinstance(fields, Mapping):
            raise ConfigError(
                f"species.{label}={fields!r} is not valid; use a mapping with token, "
                "common_name and latin_name."
            )
        unknown = sorted(set(fields) - {"token", "common_name", "latin_name"})
        if unknown:
            raise ConfigError(
                f"species.{label} has unknown field(s) {unknown}; "
                "use token, common_name and latin_name."
            )
        known = asdict(table[key]) if key in table else {}
        merged = {**known, **{k: str(v) for k, v in fields.items() if v is not None}}
        lacking = sorted({"token", "common_name", "latin_name"} - set(merged))
        if lacking:
            raise ConfigError(
                f"species.{label} lacks {lacking}; a class that is not in the built-in table "
                "needs token, common_name and latin_name."
            )
        table[key] = Species(**merged)
    return table


def _check_template(key: str, template: str) -> None:
    try:
        names = [field for _, field, _, _ in string.Formatter().parse(template) if field]
    except ValueError as error:
        raise ConfigError(f"{key}={template!r} is not a valid format string: {error}.") from error
    unknown = sorted(set(names) - set(TEMPLATE_FIELDS))
    if unknown:
        raise ConfigError(
            f"{key}={template!r} names unknown field(s) {unknown}; use {list(TEMPLATE_FIELDS)}."
        )
