"""The self-contained HTML report page: tables inline, figures embedded as PNG data URIs."""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{ title }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.85em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td:first-child { white-space: nowrap; }
tr.baseline td { background: #eef3ff; font-weight: 600; }
tr.failed td { background: #fff0f0; }
.note { background: #fff8e0; border-left: 4px solid #e0b000; padding: 0.4em 0.8em; margin: 0.4em 0; }
.figures { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; } figcaption { font-size: 0.8em; color: #555; }
img.thumb { width: 72px; height: auto; image-rendering: pixelated; }
.meta { color: #555; font-size: 0.9em; }
</style>
</head>
<body>
{% macro table(t, id) -%}
<table id="{{ id }}">
<thead><tr>{% for c in t.columns %}<th>{{ c }}</th>{% endfor %}</tr></thead>
<tbody>
{% for row, cls in t.rows %}<tr class="{{ cls }}">{% for text, kind in row %}<td class="{{ kind }}">{{ text }}</td>{% endfor %}</tr>
{% endfor %}</tbody>
</table>
{%- endmacro %}
<h1>{{ title }}</h1>
<p class="meta">Generated {{ generated }} from {{ sources|join(", ") }}.<br>
{{ counts.completed }} completed, {{ counts.failed }} failed and {{ counts.incomplete }} incomplete
job(s) in {{ counts.configurations }} configuration(s). Metrics on the {{ subset }} subset;
sorted and compared by {{ metric }}.</p>
{% for note in notes %}<div class="note">{{ note }}</div>
{% endfor %}

<h2 id="failed-jobs">Failed or incomplete jobs</h2>
{% if failed.rows %}{{ table(failed, "failed-table") }}{% else %}<p>None: every job completed.</p>{% endif %}

<h2 id="summary">Configurations</h2>
<p>Mean &plusmn; sample standard deviation over folds and seeds. The baseline rows are
highlighted; <em>diff</em> is the difference of the mean {{ metric }} to the baseline.</p>
{{ table(summary, "summary-table") }}

<h2 id="comparison">Paired comparison with the baseline</h2>
<p>Runs with the same fold and seed are paired; the interval is a {{ confidence_percent }} %
percentile bootstrap interval of the mean paired difference in {{ metric }}
({{ resamples }} resamples). A gain is clear when the interval excludes 0. With few pairs the
interval cannot be wider than the observed differences, so read it with the number of pairs.</p>
{% if comparison.rows %}{{ table(comparison, "comparison-table") }}{% else %}<p>No configuration has a baseline run
(aug={{ baseline }}) with the same fold and seed.</p>{% endif %}
<div class="figures">{% for f in figures.overview + figures.heatmap %}
<figure><img src="{{ f.uri }}" alt="{{ f.title }}"><figcaption>{{ f.title }}</figcaption></figure>{% endfor %}
</div>

<h2 id="per-class">Per class</h2>
<p>Mean per-class F1 on the {{ subset }} subset.</p>
{% if per_class.rows %}{{ table(per_class, "per-class-table") }}{% endif %}
<div class="figures">{% for f in figures.per_class %}
<figure><img src="{{ f.uri }}" alt="{{ f.title }}"><figcaption>{{ f.title }}</figcaption></figure>{% endfor %}
</div>

<h2 id="confusion">Confusion matrices</h2>
<div class="figures">{% for f in figures.confusion %}
<figure><img src="{{ f.uri }}" alt="confusion matrix {{ f.title }}"><figcaption>{{ f.title }}</figcaption></figure>{% endfor %}
</div>

<h2 id="leakage">Validation against test (leakage gap)</h2>
<p>Gap = val macro F1 minus test macro F1 per run. A split that puts frames of one video in
train and val shows a large positive gap.</p>
<div class="figures">{% for f in figures.gap %}
<figure><img src="{{ f.uri }}" alt="{{ f.title }}"><figcaption>{{ f.title }}</figcaption></figure>{% endfor %}
</div>
{{ table(gap, "gap-table") }}

<h2 id="time">Run time</h2>
{{ table(timing_techniques, "timing-techniques-table") }}
<div class="figures">{% for f in figures.timing %}
<figure><img src="{{ f.uri }}" alt="{{ f.title }}"><figcaption>{{ f.title }}</figcaption></figure>{% endfor %}
</div>
<details><summary>Run time per job</summary>{{ table(timing_jobs, "timing-jobs-table") }}</details>

<h2 id="label-issues">Likely label errors</h2>
<p>cleanlab (confident learning) on the mean out-of-sample {{ label_issues.subset }} probabilities
of {{ label_issues.images }} images; the lower the label quality, the more likely the label is
wrong.</p>
{% for message in label_issues.messages %}<div class="note">{{ message }}</div>
{% endfor %}
{% if label_issues.rows %}
<table id="label-issues-table">
<thead><tr>{% for c in label_issues.columns %}<th>{{ c }}</th>{% endfor %}</tr></thead>
<tbody>{% for row in label_issues.rows %}
<tr><td class="num">{{ row.rank }}</td><td>{% if row.thumbnail %}<img class="thumb" src="{{ row.thumbnail }}" alt="{{ row.path }}">{% endif %}</td>
<td>{{ row.label }}</td><td>{{ row.suggested }}</td><td class="num">{{ row.label_quality }}</td><td>{{ row.video }}</td><td>{{ row.path }}</td></tr>{% endfor %}
</tbody></table>
{% elif not label_issues.messages %}<p>No likely label errors found.</p>{% endif %}

<h2 id="runs">All runs</h2>
<details><summary>{{ runs.rows|length }} runs</summary>{{ table(runs, "runs-table") }}</details>
</body>
</html>
"""


def image_uri(path: Path) -> str:
    """Encode the PNG at ``path`` as a data URI, so that the page needs no other file."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def table_context(
    frame: pd.DataFrame, row_classes: Sequence[str] | None = None, digits: int = 4
) -> dict[str, Any]:
    """Columns and rows of ``frame`` for the template, each cell a ``(text, css class)`` pair;
    numbers are right-aligned and NaN prints as an empty cell."""
    rows = [
        ([_format(value, digits) for value in row], row_classes[i] if row_classes else "")
        for i, row in enumerate(frame.itertuples(index=False))
    ]
    return {"columns": [str(c) for c in frame.columns], "rows": rows}


def _format(value: Any, digits: int) -> tuple[str, str]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "", ""
    if isinstance(value, (bool, np.bool_)):
        return str(value), ""
    if isinstance(value, (float, np.floating)):
        return f"{value:.{digits}f}", "num"
    if isinstance(value, (int, np.integer)) or _is_number_text(value):
        return str(value), "num"
    return str(value), ""


def _is_number_text(value: Any) -> bool:
    """True for preformatted numbers such as ``0.8123 ± 0.0100`` or ``+0.0312``."""
    return isinstance(value, str) and bool(re.fullmatch(r"[+-]?[0-9.]+( ± [0-9.]+)?", value))


def render_html(context: dict[str, Any]) -> str:
    """Render the report page from ``context``, the variables that ``TEMPLATE`` uses."""
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return environment.from_string(TEMPLATE).render(**context)
