"""SKAB quality, measured on the alerts `streamwarden backtest` raises with the shipped sensor settings.

SKAB's protocol: each of the 34 labelled files is one device, replayed on its own (a fresh
`streamwarden backtest --domain sensors` process per file, no label column, no settings); its first
400 rows are the warm-up (the default sensor engine fits its model on them and sets its threshold from
them), the rest are scored. The product's `alert` column on the test rows is scored pooled over all
files: F1 / FAR / MAR against `anomaly`, and the NAB score (standard, LowFP, LowFN) of the alarm
changepoints against `changepoint` (60 s window), as evaluation.nab computes them.

    .venv/bin/python -m bench.skab_quality --seeds 0 1 2
    .venv/bin/python -m bench.skab_quality --seeds 0 --compare halfspace_trees   # the River peer
"""

from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from bench import quality_results
from evaluation.nab import binary_scores, changepoints_from_alarms, nab_scores

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SKAB_DATA", ROOT.parent / "shared/datasets/skab/data"))
WARMUP = 400


def files() -> list[Path]:
    return [Path(p) for p in sorted(glob.glob(str(DATA / "*" / "*.csv"))) if "anomaly-free" not in p]


def command(path: Path, seed: int, report: Path, compare: str | None) -> list[str]:
    cli = str(Path(sys.executable).with_name("streamwarden"))
    extra = ["--compare", compare] if compare else []
    return [cli, "backtest", "--input", str(path), "--domain", "sensors", "--columns", "ts=datetime", *extra,
            "--seed", str(seed), "--report", str(report), "--no-progress"]


def alerts_of(path: Path, report: Path) -> np.ndarray:
    """The product's alert per row of the file (rows in file order; event ids are `<stem>-<row>`)."""
    s = pd.read_parquet(report / "scores.parquet", columns=["event_id", "alert"])
    rows = s.event_id.str.rsplit("-", n=1).str[1].astype(int).to_numpy()
    alert = np.zeros(rows.max() + 1, bool)
    alert[rows] = s.alert.astype(bool).to_numpy()
    return alert


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--compare", default=None, help="detector(s) instead of the default champion")
    ap.add_argument("--jobs", type=int, default=2, help="files replayed at once")
    ap.add_argument("--out", default=str(ROOT / "bench/results/skab_quality"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    name = args.compare or "default"
    results_file, results = quality_results.load(out)
    data = {p: pd.read_csv(p, sep=";", parse_dates=["datetime"]) for p in files()}
    for seed in args.seeds:
        started = time.time()

        def replay(path: Path, seed: int = seed) -> np.ndarray:
            report = out / f"{name}-seed{seed}" / path.parent.name / path.stem
            subprocess.run(command(path, seed, report, args.compare), check=True, stdout=subprocess.DEVNULL)
            return alerts_of(path, report)

        with ThreadPoolExecutor(args.jobs) as pool:
            alerts = dict(zip(data, pool.map(replay, data), strict=True))
        preds = [alerts[p][WARMUP:].astype(int) for p in data]
        b = binary_scores([d.anomaly.to_numpy()[WARMUP:].astype(int) for d in data.values()], preds)
        n = nab_scores([d.datetime.to_numpy()[WARMUP:] for d in data.values()],
                       [d.changepoint.to_numpy()[WARMUP:].astype(int) for d in data.values()],
                       [changepoints_from_alarms(p) for p in preds], window="60s")
        row = {"f1": b.f1, "far": b.far, "mar": b.mar, "nab": n.standard, "nab_low_fp": n.low_fp,
               "nab_low_fn": n.low_fn, "warmup_alerts": int(sum(alerts[p][:WARMUP].sum() for p in data)),
               "wall_s": round(time.time() - started, 1),
               "command": " ".join(command(Path("FILE"), seed, Path("REPORT"), args.compare))}
        quality_results.record(results_file, results, f"{name}/{seed}", row)
    print(table(results))
    return 0


def table(results: dict[str, dict]) -> str:
    lines = ["| detector | seeds | F1 | FAR, % | MAR, % | NAB (standard) | NAB (LowFP) | NAB (LowFN) |",
             "|---|---|---|---|---|---|---|---|"]
    for name in sorted({k.split("/")[0] for k in results}):
        rows = quality_results.rows_of(results, name)

        def cell(key: str, rows: list[dict] = rows) -> str:
            return quality_results.mean_std(rows, key)

        lines.append(f"| {name} | {len(rows)} | {cell('f1')} | {cell('far')} | {cell('mar')} | {cell('nab')} | "
                     f"{cell('nab_low_fp')} | {cell('nab_low_fn')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
