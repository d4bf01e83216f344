"""Feature-state memory: RSS growth per entity at 10k, 100k and 1M entities, one fresh subprocess per size.

    .venv/bin/python -m bench.bench_memory                 # 10k, 100k, 1M
    .venv/bin/python -m bench.bench_memory --sizes 10000,100000

Each child imports the pipeline, builds an empty feature store configured as the worker builds it
(`TransactionFeatures` with the transactions label delay; `SensorWindows` with the sensors window),
reads its RSS, feeds it entities in batches of the worker's size (`runner.max_records`, 500 events: a batch's
working arrays, such as the last batch's sequences, are as large as in the worker), collects garbage and reads
the RSS again:
- transactions: N entities = N/2 cards + N/2 terminals, one transaction per card (card i pays at a
  distinct terminal), fed through `update_arrays` (the column form of `update_many`, so no event
  objects linger). The state includes the event-id index kept for delayed labels (one entry per
  transaction within the label horizon).
- sensors: N devices, 8 channels, one reading each, through `update_many`.
"transactions" is the store as the worker builds it (`stream_models.engine.featurizers.TransactionFeaturizer`: rings
start at 4 events per entity and double on demand, no per-card sequence store); "transactions-sequences"
is the store as the worker builds it when `lstm_classifier` is among the detectors (the same, plus the last
`transactions.sequence_length` feature rows per card). The difference between the two, per card, is the sequence
state the LSTM classifier costs (issue 14: at most 1 KB per card).
`array bytes` is the numpy arrays the store holds; the rest of the growth is Python objects (the
id -> slot dicts and their key strings) and allocator slack.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from bench.common import ROOT, Report, rss_bytes, verdict

BYTES_TARGET = 512
SEQUENCE_TARGET = 1024  # bytes of sequence state per card
RSS_TARGET_1M = 1 << 30
CASES = ("transactions", "transactions-sequences", "sensors")


def array_bytes(obj: Any, seen: set[int] | None = None, depth: int = 0) -> int:
    """Bytes of the numpy arrays reachable from obj's attributes, dicts, lists and tuples (shallow-ish)."""
    seen = set() if seen is None else seen
    if id(obj) in seen or depth > 4:
        return 0
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, dict):
        vals = list(obj.values())
        if len(vals) > 1000:  # id maps: their values are ints, not arrays
            return 0
        return sum(array_bytes(v, seen, depth + 1) for v in vals)
    if isinstance(obj, list | tuple):
        return sum(array_bytes(v, seen, depth + 1) for v in obj[:1000])
    if hasattr(obj, "__dict__"):
        return sum(array_bytes(v, seen, depth + 1) for v in vars(obj).values())
    return 0


def child(case: str, n: int) -> dict[str, Any]:
    """Runs in a fresh interpreter: build the store, fill it with n entities, report RSS growth."""
    from pipeline.settings import Settings

    s = Settings()
    chunk = s.runner.max_records
    t0 = time.perf_counter()
    if case.startswith("transactions"):
        from stream_models.engine.featurizers import TransactionFeaturizer

        sequence_length = s.transactions.sequence_length if case == "transactions-sequences" else 0
        store: Any = TransactionFeaturizer(s.transactions.label_delay_s, sequence_length).features
        gc.collect()
        before = rss_bytes()
        cards = n // 2
        rng = np.random.default_rng(0)
        terminal_of = rng.permutation(cards)
        start_ts = 1_704_067_200.0
        for lo in range(0, cards, chunk):
            idx = np.arange(lo, min(cards, lo + chunk))
            store.update_arrays([f"tx{i:09d}" for i in idx], start_ts + idx * 0.5,
                                [f"card{i:09d}" for i in idx], [f"term{t:09d}" for t in terminal_of[idx]],
                                rng.gamma(2.0, 30.0, len(idx)))
        entities = cards + cards
    else:
        from ingest.schemas import SensorReading
        from stream_models.sensor_windows import SensorWindows, SensorWindowsConfig

        channels = [f"c{j}" for j in range(8)]
        store = SensorWindows(SensorWindowsConfig(window=s.sensors.window, max_devices=max(n, 100_000)))
        gc.collect()
        before = rss_bytes()
        rng = np.random.default_rng(0)
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            vals = rng.normal(size=(hi - lo, 8)).tolist()
            events = [SensorReading(f"sr{i}", 1_704_067_200.0 + i, f"dev{i:09d}", dict(zip(channels, v, strict=True)))
                      for i, v in zip(range(lo, hi), vals, strict=True)]
            store.update_many(events)
            del events, vals
        entities = n
    gc.collect()
    after = rss_bytes()
    arrays = array_bytes(store)
    return {"case": case, "entities": entities, "rss_before": before, "rss_after": after,
            "growth": after - before, "bytes_per_entity": (after - before) / entities,
            "array_bytes_per_entity": arrays / entities, "seconds": time.perf_counter() - t0}


def _sequence_bytes_per_card(seq: dict[str, Any], plain: dict[str, Any]) -> tuple[float, float]:
    """(RSS growth, array bytes) per card that the sequence store adds; half the entities are cards."""
    cards = seq["entities"] // 2
    arrays = (seq["array_bytes_per_entity"] - plain["array_bytes_per_entity"]) * seq["entities"]
    return (seq["growth"] - plain["growth"]) / cards, arrays / cards


def run_child(case: str, n: int, timeout_s: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.bench_memory", "--child", case, str(n)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
    if out.returncode != 0:
        return {"case": case, "entities": n, "error": (out.stderr or out.stdout).strip().splitlines()[-1:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--child", nargs=2, metavar=("CASE", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per child")
    parser.add_argument("--no-md", action="store_true")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]))))
        return {}

    sizes = [int(x) for x in args.sizes.split(",")]
    rows = []
    for case in args.cases.split(","):
        for n in sizes:
            r = run_child(case, n, args.timeout)
            rows.append(r)
            if "error" in r:
                print(f"  {case} {n:,}: FAILED {r['error']}", flush=True)
            else:
                print(f"  {case} {n:,}: {r['bytes_per_entity']:,.0f} B/entity, RSS {r['rss_after'] / 2**20:,.0f} MiB "
                      f"({r['seconds']:.1f} s)", flush=True)
    report = Report("memory", "Memory", "Feature state memory per entity")
    ok = [r for r in rows if "error" not in r]
    report.table("RSS growth per entity (fresh subprocess per row)",
                 ["store", "entities", "RSS growth MiB", "bytes/entity", "array bytes/entity", "process RSS MiB",
                  "<= 512 B/entity"],
                 [[r["case"], r["entities"], r["growth"] / 2**20, r["bytes_per_entity"], r["array_bytes_per_entity"],
                   r["rss_after"] / 2**20, verdict(r["bytes_per_entity"] <= BYTES_TARGET)] for r in ok])
    plain = {r["entities"]: r for r in ok if r["case"] == "transactions"}
    with_sequences = [r for r in ok if r["case"] == "transactions-sequences" and r["entities"] in plain]
    if with_sequences:
        per_card = [(r, *_sequence_bytes_per_card(r, plain[r["entities"]])) for r in with_sequences]
        report.table("Per-card sequence state of lstm_classifier (transactions-sequences minus transactions; cards = "
                     "entities / 2)",
                     ["entities", "cards", "RSS bytes/card", "array bytes/card", "<= 1 KB/card"],
                     [[r["entities"], r["entities"] // 2, rss, arrays, verdict(rss <= SEQUENCE_TARGET)]
                      for r, rss, arrays in per_card])
    million = [r for r in ok if r["entities"] >= 1_000_000]
    if million:
        report.table("1M entities in <= 1 GB RSS (whole process, Python + numpy + torch loaded)",
                     ["store", "process RSS MiB", "state growth MiB", "target"],
                     [[r["case"], r["rss_after"] / 2**20, r["growth"] / 2**20,
                       verdict(r["rss_after"] <= RSS_TARGET_1M)] for r in million])
    failed = [r for r in rows if "error" in r]
    if failed:
        report.add("Failed rows: " + "; ".join(f"{r['case']} {r['entities']:,}: {r['error']}" for r in failed))
    report.data = {"rows": rows, "targets": {"bytes_per_entity": BYTES_TARGET, "rss_1m": RSS_TARGET_1M,
                                                 "sequence_bytes_per_card": SEQUENCE_TARGET}}
    report.save(update_md=not args.no_md)
    return report.data


if __name__ == "__main__":
    main()
