"""Do declared event attributes help? The Fraud Handbook with three simulated attributes, through `streamwarden
backtest`, with and without declaring them.

The Handbook has no attributes beyond card, terminal, amount and time, so this script adds three, seeded (the
same `--data-seed` gives the same file):
  COUNTRY            informative: each customer has a home country; a genuine transaction is abroad 3 % of the
                     time, a fraudulent one 60 % of the time (anywhere else);
  CHANNEL            uninformative: pos / ecom / atm drawn independently of fraud;
  MERCHANT_CATEGORY  uninformative: one category per terminal.
The file (Parquet, in ~/.cache/streamwarden/handbook_attributes/) is then replayed twice with the protocol of
bench/fraud_quality.py (labels 7 days late, default settings, the book's four test weeks): both runs send the
attributes on the wire (`--attributes COUNTRY,CHANNEL,MERCHANT_CATEGORY`); only the second declares them for the
models (`--config bench/handbook_attributes.yaml`).

    .venv/bin/python -m bench.handbook_attributes --seeds 0
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
from bench.fraud_quality import COLUMNS, RAW, ROOT, score

CACHE = Path.home() / ".cache/streamwarden/handbook_attributes"
CONFIG = ROOT / "bench/handbook_attributes.yaml"
ATTRIBUTES = "COUNTRY,CHANNEL,MERCHANT_CATEGORY"
COUNTRIES = np.array(["FR", "DE", "ES", "IT", "BE", "NL", "PT", "GB", "US", "CH", "PL", "SE"])
RUNS = {"undeclared": [], "declared": ["--config", str(CONFIG)]}


def make_file(data_seed: int) -> Path:
    """The Handbook's raw transactions plus the three attributes (cached)."""
    path = CACHE / f"transactions_attributes_seed{data_seed}.parquet"
    if path.exists():
        return path
    rng = np.random.default_rng(data_seed)
    frame = pd.read_csv(RAW)
    customers = frame["CUSTOMER_ID"].to_numpy()
    home = rng.choice(len(COUNTRIES), size=int(customers.max()) + 1, p=np.r_[0.3, 0.2, np.full(10, 0.05)])[customers]
    abroad = rng.random(len(frame)) < np.where(frame["TX_FRAUD"].to_numpy() == 1, 0.6, 0.03)
    elsewhere = (home + rng.integers(1, len(COUNTRIES), size=len(frame))) % len(COUNTRIES)
    frame["COUNTRY"] = COUNTRIES[np.where(abroad, elsewhere, home)]
    frame["CHANNEL"] = rng.choice(np.array(["pos", "ecom", "atm"]), size=len(frame), p=[0.6, 0.3, 0.1])
    categories = np.array(["grocery", "fuel", "restaurant", "retail", "electronics", "travel", "health", "online"])
    terminals = frame["TERMINAL_ID"].to_numpy()
    frame["MERCHANT_CATEGORY"] = rng.choice(categories, size=int(terminals.max()) + 1)[terminals]
    CACHE.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    return path


def command(run: str, data: Path, seed: int, report: Path) -> list[str]:
    cli = str(Path(sys.executable).with_name("streamwarden"))
    return [cli, "backtest", "--input", str(data), "--columns", COLUMNS + ",label=TX_FRAUD", "--label-delay", "7d",
            "--attributes", ATTRIBUTES, *RUNS[run], "--seed", str(seed), "--report", str(report), "--no-progress"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="undeclared,declared")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "bench/results/handbook_attributes"))
    args = ap.parse_args(argv)
    data = make_file(args.data_seed)
    out = Path(args.out)
    results_file, results = quality_results.load(out)
    truth = pd.read_parquet(data, columns=["TRANSACTION_ID", "TX_FRAUD"]).set_index("TRANSACTION_ID").TX_FRAUD
    for run in args.runs.split(","):
        for seed in args.seeds:
            report = out / f"{run}-seed{seed}"
            cmd = command(run, data, seed, report)
            print("$ " + " ".join(cmd), flush=True)
            started = time.time()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=dict(os.environ))
            row = {**score(report, truth), "wall_s": round(time.time() - started, 1), "command": " ".join(cmd)}
            quality_results.record(results_file, results, f"{run}/{seed}", row)
    print(table(results))
    return 0


def table(results: dict[str, dict]) -> str:
    lines = ["| run | seeds | AUC | AP | CP@100 | alert precision | alert recall |", "|---|---|---|---|---|---|---|"]
    for run in RUNS:
        rows = quality_results.rows_of(results, run)
        if rows:
            cells = [quality_results.mean_std(rows, k) for k in ("auc", "ap", "cp100", "alert_precision",
                                                                  "alert_recall")]
            lines.append(f"| {run} | {len(rows)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
