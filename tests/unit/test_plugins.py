"""Detectors from outside the package: file paths, dotted paths, entry points; the check suite at load time."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.domains import build_processor
from pipeline.errors import ConfigError
from pipeline.settings import load_settings
from stream_models import catalog, plugins
from stream_models.errors import ModelError

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples" / "my_detectors.py"
BROKEN = '''
import numpy as np
from stream_models.plugins import TorchRowDetector
from torch import nn

class Forgetful(TorchRowDetector):
    """Scores with fresh random weights every call: a restored checkpoint cannot score the same."""

    def build_module(self, n_features):
        return nn.Linear(n_features, n_features)

    def score_many(self, X):
        return np.random.default_rng().random(len(X))
'''


@pytest.fixture(autouse=True)
def _forget_plugins(monkeypatch: pytest.MonkeyPatch):
    before = dict(catalog.DETECTORS)
    monkeypatch.setattr(catalog, "_loaded", catalog._loaded)
    yield
    catalog.DETECTORS.clear()
    catalog.DETECTORS.update(before)


@pytest.mark.parametrize("name, learns", [("TinyAutoencoder", False), ("FraudNet", True), ("OneClassSvm", False)])
def test_the_documented_examples_load_from_a_file_path_and_pass_the_checks(name: str, learns: bool) -> None:
    spec = f"{EXAMPLES}:{name}"
    assert catalog.consumes(spec) == "rows"
    assert catalog.learns_from_labels(spec) is learns
    detector = catalog.make(spec, n_features=3, feature_names=["a", "b", "c"], seed=0)
    X = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    detector.learn_many(X, np.zeros(64))
    scores = detector.score_many(X)
    assert scores.shape == (64,) and np.isfinite(scores).all()
    assert {n for n, _ in detector.explain_many(X[:1], k=2)[0]} <= {"a", "b", "c"}


def test_a_dotted_path_imports_from_the_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "teamfraud").mkdir()
    (tmp_path / "teamfraud" / "__init__.py").write_text("")
    (tmp_path / "teamfraud" / "models.py").write_text(EXAMPLES.read_text())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert catalog.consumes("teamfraud.models:TinyAutoencoder") == "rows"
    with pytest.raises(ModelError, match="has no 'Missing'"):
        catalog.factory("teamfraud.models:Missing")
    with pytest.raises(ModelError, match="cannot import nosuchpkg"):
        catalog.factory("nosuchpkg.models:X")


def test_a_detector_that_breaks_the_contract_is_refused_naming_the_check(tmp_path: Path) -> None:
    path = tmp_path / "broken.py"
    path.write_text(BROKEN)
    with pytest.raises(ModelError, match=r"Forgetful' failed the check 'scoring does not learn'"):
        catalog.factory(f"{path}:Forgetful")
    assert f"{path}:Forgetful" not in catalog.DETECTORS


def test_a_class_that_is_no_detector_is_refused_with_what_it_lacks(tmp_path: Path) -> None:
    path = tmp_path / "plain.py"
    path.write_text("class Thing:\n    def __init__(self, **kw):\n        self.feature_names = ['a']\n")
    with pytest.raises(ModelError, match="missing score_many, learn_many"):
        catalog.factory(f"{path}:Thing")
    with pytest.raises(ModelError, match="no file"):
        catalog.factory(f"{tmp_path}/absent.py:Thing")


def test_settings_name_the_domain_setting_when_a_plugin_fails(tmp_path: Path) -> None:
    path = tmp_path / "broken.py"
    path.write_text(BROKEN)
    settings = load_settings(runner={"device": "cpu"}, transactions={"detector": f"{path}:Forgetful"})
    with pytest.raises(ConfigError, match=r"setting 'transactions.detector'.*failed the check"):
        build_processor(settings, "transactions")


def test_params_reach_a_plugin_under_its_case_sensitive_path() -> None:
    spec = f"{EXAMPLES}:OneClassSvm"
    settings = load_settings(runner={"device": "cpu"},
                             transactions={"detector": spec, "params": {spec: {"nu": 0.3}}, "challengers": []})
    engine = build_processor(settings, "transactions")
    detector = engine.detectors()[spec]
    assert detector.params == {"nu": 0.3}


def test_an_installed_entry_point_registers_a_detector(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    (site / "teamplug").mkdir(parents=True)
    (site / "teamplug" / "__init__.py").write_text(EXAMPLES.read_text())
    info = site / "teamplug-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: teamplug\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[streamwarden.detectors]\nteam_svm = teamplug:OneClassSvm\n")
    monkeypatch.setattr(sys, "path", [str(site), *sys.path])
    monkeypatch.setattr(catalog, "_loaded", False)  # as in a fresh process: installed plug-ins are read once
    assert "team_svm" in catalog.names()
    assert catalog.consumes("team_svm") == "rows"
    assert "team_svm" in plugins.entry_point_factories()


def test_models_list_shows_a_plugin_given_in_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = f"{EXAMPLES}:FraudNet"
    monkeypatch.setenv("STREAMWARDEN_TRANSACTIONS__CHALLENGERS", f'["{spec}"]')
    result = CliRunner().invoke(app, ["models", "list"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if "FraudNet" in line)
    assert "rows" in row and "labels" in row and "transactions" in row


def test_models_list_names_the_setting_of_a_broken_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "broken.py"
    path.write_text(BROKEN)
    monkeypatch.setenv("STREAMWARDEN_SENSORS__DETECTOR", f"{path}:Forgetful")
    result = CliRunner().invoke(app, ["models", "list"])
    assert result.exit_code == 2
    assert "setting 'sensors.detector'" in result.output and "scoring does not learn" in result.output


def test_a_subclass_with_an_unknown_objective_is_refused() -> None:
    with pytest.raises(ModelError, match="objective"):
        type("Odd", (plugins.TorchRowDetector,), {"objective": "ranking"})
