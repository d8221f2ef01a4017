"""The comparison notebook runs top to bottom on a sweep written here."""

from __future__ import annotations

import pytest
from conftest import REPO_ROOT
from test_report import write_fake_sweeps

NOTEBOOK = REPO_ROOT / "notebooks" / "compare_runs.ipynb"


def test_compare_runs_notebook_executes(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    sweeps = write_fake_sweeps(tmp_path / "logs")
    monkeypatch.setenv("FISHAUG_SWEEPS", ":".join(str(s) for s in sweeps))
    monkeypatch.setenv("FISHAUG_NOTEBOOK_OUTPUT", str(tmp_path / "out"))
    monkeypatch.setenv("MPLBACKEND", "Agg")

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=300,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()

    outputs = [output for cell in notebook.cells for output in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "\n".join(
        str(o.get("data", {}).get("text/plain", "")) + str(o.get("text", "")) for o in outputs
    )
    assert "randaugment n=2 m=9" in text
    assert "better" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 5
    assert (tmp_path / "out" / "heatmap_randaugment.png").is_file()
