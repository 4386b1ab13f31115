"""The Colab notebook runs top to bottom in tiny mode (offline, CPU): the parameter cell gets TINY = True."""

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel", reason="the notebook test needs a python3 Jupyter kernel (pip install ipykernel)")

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "depo_gsm8k_lora_colab.ipynb"


def _tiny(nb, output_dir):
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "the notebook needs exactly one cell tagged 'parameters'"
    assert "TINY = False" in cells[0].source, "the parameter cell must define TINY = False"
    cells[0].source = cells[0].source.replace("TINY = False", "TINY = True") + f"\nOUTPUT_DIR = {str(output_dir)!r}\n"
    return nb


def test_install_cell_is_guarded():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    markers = ('"pip", "install"', "pip install")
    installs = [c for c in nb.cells if c.cell_type == "code" and any(m in c.source for m in markers)]
    assert installs and all(c.source.lstrip().startswith("if not TINY:") for c in installs)


def test_notebook_runs_in_tiny_mode(tmp_path):
    nb = _tiny(nbformat.read(NOTEBOOK, as_version=4), tmp_path / "out")
    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits them, so nothing can reach the hub
    try:
        client = nbclient.NotebookClient(
            nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
        )
        client.execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    text = "\n".join(
        out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
    )
    assert "DEPO: 20 rounds" in text and "skipped" in text
    assert "Uniform reference:" in text and "Completions:" in text
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 4
    for name in ("calibration.png", "band_share.png", "rollouts_saved.png", "useful_share.png", "summary.txt"):
        assert (tmp_path / "out" / "depo_report" / name).is_file()
