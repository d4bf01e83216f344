"""Fraud-detection quality on the Fraud Detection Handbook, measured through `streamwarden backtest`.

Each run is the CLI as a user types it, in a fresh process, with the shipped settings (no config file,
no environment variable): the raw transactions are replayed in time order, scored before they are
learned from, and (for the labelled runs) each fraud label is revealed 7 days after its transaction.
The product's scores.parquet is then scored on the book's four test weeks (2018-08-08 .. 09-04) with
its known-compromised-card rule: AUC ROC, Average Precision and Card Precision@100 of the score users
receive (`score`, the champion's), plus precision/recall of the alerts raised in those weeks.

Runs (each with `--seed S`):
  default   labels revealed 7 days late, default settings
  lstm      the same with `--compare lstm_classifier`
  nolabel   no label column (nothing revealed), default settings
  hst       no label column, `--compare halfspace_trees` (River's Half-Space Trees, the peer baseline)

Without labels the product alerts through its card profile (a label-free champion raises no alert), so the
"hst" run's alerts are the same as "nolabel"'s. For issue 13's "beat HalfSpaceTrees' alerts at the same volume",
once both runs of a seed exist, Half-Space Trees is given exactly the product's alert volume: each test-week day,
as many alerts as the "nolabel" run raised that day, on the events its own score ranks highest that day. Recorded
as "hst_same_volume/S" (alert precision and recall in the test weeks; `--same-volume-only` computes it from the
existing reports without running anything).

    .venv/bin/python -m bench.fraud_quality --runs default,nolabel,hst,lstm --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench import quality_results
from evaluation.metrics import precision_recall, week_metrics

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("STREAMWARDEN_FRAUD_DATA", ROOT.parent / "shared/datasets/fraud_handbook"))
RAW = DATA / "transactions_raw.csv.gz"
EPOCH0 = pd.Timestamp("2018-04-01", tz="UTC").timestamp()
TEST_WEEKS = (129, 136, 143, 150)  # 2018-08-08, 08-15, 08-22, 08-29 (day 0 = 2018-04-01)
VALIDATION_WEEKS = (94, 101, 108, 115)  # 2018-07-04 .. 07-31: where settings are chosen, never on test weeks
COLUMNS = "event_id=TRANSACTION_ID,ts=TX_DATETIME,card_id=CUSTOMER_ID,terminal_id=TERMINAL_ID,amount=TX_AMOUNT"
RUNS = {
    "default": (["--columns", COLUMNS + ",label=TX_FRAUD", "--label-delay", "7d"], True),
    "lstm": (["--columns", COLUMNS + ",label=TX_FRAUD", "--label-delay", "7d", "--compare", "lstm_classifier"], True),
    "nolabel": (["--columns", COLUMNS], False),
    "hst": (["--columns", COLUMNS, "--compare", "halfspace_trees"], False),
}


def command(run: str, seed: int, report: Path) -> list[str]:
    cli = str(Path(sys.executable).with_name("streamwarden"))
    return [cli, "backtest", "--input", str(RAW), *RUNS[run][0], "--seed", str(seed), "--report", str(report),
            "--no-progress"]


def param_env(params: list[str], settings: list[str] = ()) -> dict[str, str]:
    """`--param lstm_classifier.lstm_hidden=32` or `--setting steps_per_update=16` -> the settings variable a user
    would set for it."""
    env = {}
    for item in params:
        key, _, value = item.partition("=")
        detector, _, field = key.partition(".")
        env[f"STREAMWARDEN_TRANSACTIONS__PARAMS__{detector.upper()}__{field.upper()}"] = value
    for item in settings:
        field, _, value = item.partition("=")
        env[f"STREAMWARDEN_TRANSACTIONS__{field.upper()}"] = value
    return env


def score(report: Path, truth: pd.Series) -> dict[str, object]:
    """Test-week metrics of the backtest's scores.parquet (labels joined from the raw file by id), and the
    same metrics of the validation weeks under "validation"."""
    s = pd.read_parquet(report / "scores.parquet", columns=["event_id", "entity", "ts", "score", "alert", "detector"])
    frame = pd.DataFrame({
        "TX_TIME_DAYS": ((s.ts - EPOCH0) // 86_400).astype(int), "CUSTOMER_ID": s.entity,
        "TX_FRAUD": s.event_id.astype(np.int64).map(truth).to_numpy(), "predictions": s.score.fillna(0.0),
        "alert": s.alert.astype(bool)})
    test = s[(s.ts >= EPOCH0 + TEST_WEEKS[0] * 86_400)]
    return {**weeks_metrics(frame, TEST_WEEKS), "champion_in_test_weeks": ",".join(sorted(test.detector.unique())),
            "validation": weeks_metrics(frame, VALIDATION_WEEKS)}


def weeks_metrics(frame: pd.DataFrame, weeks: tuple[int, ...]) -> dict[str, float]:
    out: dict[str, list[float]] = {"auc": [], "ap": [], "cp100": [], "alert_precision": [], "alert_recall": [],
                                  "alerts_per_day": []}
    for week in weeks:
        m = week_metrics(frame, week)
        for key in ("auc", "ap", "cp100"):
            out[key].append(m[key])
        days = frame[(frame.TX_TIME_DAYS >= week) & (frame.TX_TIME_DAYS < week + 7)]
        p, r = precision_recall(days.TX_FRAUD.to_numpy(), days.alert.to_numpy())
        out["alert_precision"].append(np.nan if p is None else p)
        out["alert_recall"].append(np.nan if r is None else r)
        out["alerts_per_day"].append(float(days.alert.sum()) / 7)
    return {k: float(np.nanmean(v)) for k, v in out.items()}


def same_volume(nolabel: Path, hst: Path, truth: pd.Series) -> dict[str, object]:
    """Half-Space Trees' alerts at the product's volume: per test-week day, its top-k scores with k = the alerts
    the product raised that day without labels; alert precision and recall of both in the test weeks."""
    ours = pd.read_parquet(nolabel / "scores.parquet", columns=["event_id", "ts", "alert"])
    peer = pd.read_parquet(hst / "scores.parquet", columns=["event_id", "score"])
    frame = ours.merge(peer, on="event_id", validate="one_to_one")
    frame["day"] = ((frame.ts - EPOCH0) // 86_400).astype(int)
    frame["fraud"] = frame.event_id.astype(np.int64).map(truth).to_numpy()
    test = frame[(frame.day >= TEST_WEEKS[0]) & (frame.day < TEST_WEEKS[-1] + 7)].copy()
    k = test.groupby("day").alert.transform("sum")
    rank = test.score.fillna(-np.inf).groupby(test.day).rank(method="first", ascending=False)
    test["peer_alert"] = rank <= k
    row: dict[str, object] = {"days": int(test.day.nunique()), "alerts": int(test.alert.sum()),
                              "peer_alerts": int(test.peer_alert.sum())}
    for name, col in (("ours", "alert"), ("hst", "peer_alert")):
        p, r = precision_recall(test.fraud.to_numpy(), test[col].to_numpy())
        row[f"{name}_precision"] = float("nan") if p is None else float(p)
        row[f"{name}_recall"] = float("nan") if r is None else float(r)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="default,nolabel,hst,lstm")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default=str(ROOT / "bench/results/fraud_quality"))
    ap.add_argument("--param", action="append", default=[], metavar="DETECTOR.FIELD=VALUE",
                    help="a detector setting for a selection run (recorded with the run; read its validation weeks)")
    ap.add_argument("--setting", action="append", default=[], metavar="FIELD=VALUE",
                    help="a transactions model setting for a selection run, e.g. steps_per_update=16")
    ap.add_argument("--same-volume-only", action="store_true",
                    help="only compare the existing nolabel and hst reports at the same alert volume")
    args = ap.parse_args(argv)
    env = param_env(args.param, args.setting)
    tag = f"[{','.join([*args.param, *args.setting])}]" if env else ""
    out = Path(args.out)
    results_file, results = quality_results.load(out)
    truth = pd.read_csv(RAW, usecols=["TRANSACTION_ID", "TX_FRAUD"]).set_index("TRANSACTION_ID").TX_FRAUD
    for run in [] if args.same_volume_only else args.runs.split(","):
        for seed in args.seeds:
            report = out / f"{run}{tag}-seed{seed}"
            cmd = command(run, seed, report)
            shown = " ".join([*(f"{k}={v}" for k, v in env.items()), *cmd])
            print("$ " + shown, flush=True)
            started = time.time()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env={**os.environ, **env})
            row = {**score(report, truth), "wall_s": round(time.time() - started, 1), "command": shown}
            quality_results.record(results_file, results, f"{run}{tag}/{seed}", row)
    for seed in args.seeds:
        nolabel, hst = out / f"nolabel-seed{seed}", out / f"hst-seed{seed}"
        if (nolabel / "scores.parquet").exists() and (hst / "scores.parquet").exists():
            quality_results.record(results_file, results, f"hst_same_volume/{seed}", same_volume(nolabel, hst, truth))
    print(table(results))
    return 0


def table(results: dict[str, dict]) -> str:
    lines = ["| run | seeds | AUC | AP | CP@100 | alert precision | alert recall | alerts a day | champion in test weeks |",
             "|---|---|---|---|---|---|---|---|---|"]
    for run in RUNS:
        rows = quality_results.rows_of(results, run)
        if not rows:
            continue

        def cell(key: str, rows: list[dict] = rows) -> str:
            return quality_results.mean_std(rows, key)

        lines.append(f"| {run} | {len(rows)} | {cell('auc')} | {cell('ap')} | {cell('cp100')} | "
                     f"{cell('alert_precision')} | {cell('alert_recall')} | {cell('alerts_per_day')} | "
                     f"{rows[0]['champion_in_test_weeks']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
