"""The README's Python examples run as a user would paste them, so they cannot rot."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_readme_has_its_examples():
    assert len(BLOCKS) >= 2
    assert "tinynet.models.lenet_bn" in BLOCKS[0]  # the quickstart comes first


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, tmp_path, capsys):
    script = tmp_path / f"readme_{index}.py"
    script.write_text(BLOCKS[index], encoding="utf-8")
    namespace = runpy.run_path(str(script), run_name="__main__")
    assert capsys.readouterr().out.strip()  # every example prints what it shows
    if index == 0:
        # The quickstart's held-out accuracy must be far above chance (10 classes).
        predicted = namespace["fast"](namespace["x_test"]).argmax(1)
        assert (predicted == namespace["y_test"]).mean() > 0.3
