"""The Python API: `import streamwarden` is cheap, its docstring examples run, and the README's section works."""

from __future__ import annotations

import doctest
import re
import subprocess
import sys
from pathlib import Path

import pytest

import streamwarden
from stream_models import plugins
from streamwarden import api

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.parametrize("module", [api, plugins], ids=lambda m: m.__name__)
def test_the_docstring_examples_run(module) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_import_streamwarden_loads_neither_torch_nor_kafka() -> None:
    code = "import sys, streamwarden; print(sorted(m for m in ('torch', 'kafka', 'pandas') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


def test_the_api_names_resolve_and_unknown_names_fail() -> None:
    for name in streamwarden.__all__:
        assert getattr(streamwarden, name) is not None
    assert streamwarden.run_backtest is api.run_backtest
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        streamwarden.nope  # noqa: B018


def test_the_readme_python_section_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    section = README.read_text().split("## Use it from Python", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code, "README has no python block under 'Use it from Python'"
    monkeypatch.chdir(tmp_path)
    exec(compile(code.group(1), "README.md", "exec"), {})
