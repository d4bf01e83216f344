"""The results file of a quality benchmark (one row per run and seed) and its mean ± std table cells."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def load(out: Path) -> tuple[Path, dict[str, dict[str, Any]]]:
    """(results.json under `out`, the rows recorded there so far)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    return path, json.loads(path.read_text()) if path.exists() else {}


def record(path: Path, results: dict[str, dict[str, Any]], key: str, row: dict[str, Any]) -> None:
    """Add `row` as `key` ("run/seed"), rewrite the file and print the row's figures."""
    results[key] = row
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{key}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items() if isinstance(v, float)), flush=True)


def rows_of(results: dict[str, dict[str, Any]], run: str) -> list[dict[str, Any]]:
    return [v for k, v in results.items() if k.split("/")[0] == run]


def mean_std(rows: list[dict[str, Any]], key: str) -> str:
    """Mean ± sample standard deviation over the seeds (just the value for one seed)."""
    vals = np.array([r.get(key, np.nan) for r in rows], float)
    return f"{vals.mean():.4f}" if len(vals) < 2 else f"{vals.mean():.4f} ± {vals.std(ddof=1):.4f}"
