"""Model stage alone (no Kafka, no Redis): featurise + score + learn, events/s, per detector and batch size.

    .venv/bin/python -m bench.bench_models                      # CPU, all detectors
    .venv/bin/python -m bench.bench_models --device cuda        # the same on a GPU
    .venv/bin/python -m bench.bench_models --quick --sizes 1024,16384 --detectors dense_autoencoder

What one batch of B events costs, each stage timed on its own, medians over the timed batches:
- featurise: `TransactionFeatures.update_many(events)` (cards/terminals state, (B, F)) or
  `SensorWindows.update_many(events)` (per-device windows, (B, W, C)), state warm from earlier batches;
- score: `detector.score_many(X)`, one batched forward pass;
- learn: `detector.learn_many(X, y)` on the same batch (the Detector protocol's unit of learning:
  one optimiser step for tabular torch models, minibatches of 64 for window models, every row for
  Half-Space Trees);
- total = B / (featurise + score + learn).
A last table runs the deployed composition, `pipeline.domains.StreamProcessor.process(events)` with
default settings (champion + quantile threshold + drift monitor + OnlineLearner, learning in fixed
chunks of `learn_every` events), which is what the end-to-end pipeline spends its model time in.
Detectors the pipeline registry knows are built with the pipeline's factories and settings; the
others with the catalog defaults. Tabular detectors run on transactions; window detectors on
sensor windows, except `lstm_classifier`, which takes the cards' transaction sequences (B, T, F).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from bench.common import Report, verdict

TX_TARGET = 300_000.0  # events/s, CPU, default transaction detector
SENSOR_TARGET = 20_000.0  # windows/s, CPU, default sensor detector
DEFAULT_SIZES = (256, 1024, 4096, 16384, 65536)
QUICK_SIZES = (1024, 16384)
SENSOR_CHANNELS = 8


def transaction_events(n: int, seed: int = 0) -> tuple[list[Any], np.ndarray]:
    """About n simulated transactions (15 days of ~n/25 cards) and their fraud labels."""
    from ingest.simulator import TransactionSimulator

    customers = max(200, n // 25)
    sim = TransactionSimulator(seed=seed, n_customers=customers, n_terminals=customers, days=15)
    return list(sim.events())[:n], np.asarray(sim.is_fraud[:n], np.float32)


def sensor_events(n: int, seed: int = 0, channels: int = SENSOR_CHANNELS) -> list[Any]:
    from ingest.simulator import SensorSimulator

    devices = 40
    sim = SensorSimulator(seed=seed, n_devices=devices, channels=channels, n_steps=math.ceil(n / devices))
    return list(sim.events())[:n]


def build(name: str, domain: str, names: list[str], device: str | None) -> Any:
    """Pipeline factory (production settings) when the pipeline knows the detector, else the catalog's."""
    from pipeline import domains
    from pipeline.settings import Settings
    from stream_models import catalog

    registry = domains.SENSOR_DETECTORS if domain == "sensors" else domains.TRANSACTION_DETECTORS
    pipeline_name = {"mlp_classifier": "mlp"}.get(name, name)
    if pipeline_name in registry:
        return domains.make_detector(domain, pipeline_name, names, Settings().model(domain), device)
    if name == "fraud_detector":  # its device lives in the configs of its two parts
        from stream_models.dense_autoencoder import DenseAutoencoderConfig
        from stream_models.fraud_detector import FraudDetector, FraudDetectorConfig
        from stream_models.mlp_classifier import MLPClassifierConfig

        return FraudDetector(names, FraudDetectorConfig(DenseAutoencoderConfig(device=device),
                                                        MLPClassifierConfig(device=device)))
    params: dict[str, Any] = {"seed": 0}
    if name != "halfspace_trees":  # River: CPU only
        params["device"] = device
    return catalog.make(name, n_features=len(names), **params)


def detector_domain(name: str) -> str:
    from stream_models import catalog

    if name == "lstm_classifier":
        return "sequences"
    return "sensors" if catalog.consumes(name) == "windows" else "transactions"


class Batches:
    """The stream cut in batches of B, featurised once (state carried across batches), kept for the models."""

    def __init__(self, domain: str, events: list[Any], labels: np.ndarray | None, B: int, keep: int) -> None:
        from pipeline.settings import Settings

        self.domain, self.B = domain, B
        n_batches = max(2, min(len(events) // B, keep + 1))
        m = Settings().model("sensors" if domain == "sensors" else "transactions")
        if domain == "sensors":
            from stream_models.sensor_windows import SensorWindows, SensorWindowsConfig

            feats: Any = SensorWindows(SensorWindowsConfig(window=m.window))
        else:
            from stream_models.transaction_features import TransactionFeatures, TransactionFeaturesConfig

            feats = TransactionFeatures(TransactionFeaturesConfig(label_delay_days=m.label_delay_s / 86_400))
        self.X: list[np.ndarray] = []
        self.y: list[np.ndarray | None] = []
        times = []
        for i in range(n_batches):
            part = events[i * B : (i + 1) * B]
            if len(part) < B:
                break
            t0 = time.perf_counter()
            out = feats.update_many(part)
            took = time.perf_counter() - t0
            if i:  # the first batch fills an empty state
                times.append(took)
            X = out[1]
            if domain == "sequences":
                X = feats.last_sequences
            if domain == "sensors":
                X = X[out[2]]  # ready windows only
            self.X.append(np.ascontiguousarray(X))
            self.y.append(None if labels is None else labels[i * B : (i + 1) * B])
        self.feature_names = list(feats.channels if domain == "sensors" else feats.feature_names)
        self.featurise_s = statistics.median(times) if times else float("nan")


def time_stage(fn: Callable[[np.ndarray, Any], Any], batches: Batches, budget_s: float, sync: Callable[[], None]) -> float:
    """Median seconds per batch over the timed batches (batch 0 warms up); stops once the budget is spent."""
    times, spent = [], 0.0
    for X, y in zip(batches.X[1:], batches.y[1:], strict=True):
        t0 = time.perf_counter()
        fn(X, y)
        sync()
        took = time.perf_counter() - t0
        times.append(took * batches.B / max(1, len(X)))  # sensors: per B events even if some windows not ready
        spent += took
        if spent >= budget_s:
            break
    return statistics.median(times)


def bench_detector(name: str, batches: Batches, device: str | None, budget_s: float) -> dict[str, Any]:
    domain = "sensors" if batches.domain == "sensors" else "transactions"
    det = build(name, domain, batches.feature_names, device)
    supervised = name in ("mlp_classifier", "fraud_detector", "lstm_classifier")
    sync = _sync(device)
    X0, y0 = batches.X[0], batches.y[0]
    det.learn_many(X0[:1024], None if not supervised or y0 is None else y0[:1024])  # warm up (allocations)
    det.score_many(X0[:1024])
    score_s = time_stage(lambda X, y: det.score_many(X), batches, budget_s, sync)
    learn_s = time_stage(lambda X, y: det.learn_many(X, y if supervised else None), batches, budget_s, sync)
    B = batches.B
    total = batches.featurise_s + score_s + learn_s
    return {"detector": name, "domain": batches.domain, "batch": B, "featurise_eps": B / batches.featurise_s,
            "score_eps": B / score_s, "learn_eps": B / learn_s, "total_eps": B / total,
            "featurise_share": batches.featurise_s / total, "timed_batches": len(batches.X) - 1}


def bench_processor(domain: str, events: list[Any], B: int, device: str | None, budget_s: float) -> dict[str, Any]:
    """StreamProcessor.process at default settings, events/s per batch of B (after one warm-up batch)."""
    from pipeline.domains import build_processor
    from pipeline.settings import load_settings

    settings = load_settings(runner={"domain": domain, "device": device or "auto"})
    proc = build_processor(settings, domain)
    warm = 2_000  # model built, thresholds past their warm-up
    proc.process(events[:warm])
    times, spent, i = [], 0.0, warm
    while i + B <= len(events) and (spent < budget_s or not times):
        t0 = time.perf_counter()
        proc.process(events[i : i + B])
        took = time.perf_counter() - t0
        times.append(took)
        spent += took
        i += B
    if not times:
        return {"domain": domain, "batch": B, "eps": float("nan"), "detector": proc.detector_name}
    return {"domain": domain, "batch": B, "eps": B / statistics.median(times), "detector": proc.detector_name,
            "timed_batches": len(times)}


def _sync(device: str | None) -> Callable[[], None]:
    if device and device.startswith("cuda"):
        import torch

        return torch.cuda.synchronize
    return lambda: None


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument("--sizes", help=f"batch sizes (default {','.join(map(str, DEFAULT_SIZES))})")
    parser.add_argument("--detectors", help="comma-separated catalog names (default: all)")
    parser.add_argument("--budget", type=float, default=None, help="seconds of timing per stage and cell")
    parser.add_argument("--quick", action="store_true", help="two batch sizes, short budgets")
    parser.add_argument("--no-md", action="store_true", help="do not update BENCHMARKS.md")
    args = parser.parse_args(argv)
    from pipeline.settings import Settings
    from stream_models.device import set_torch_threads

    set_torch_threads(Settings().runner.torch_threads)  # what the worker does with the shipped settings
    from stream_models import catalog

    device = None if args.device == "auto" else args.device
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else list(QUICK_SIZES if args.quick else DEFAULT_SIZES)
    budget = args.budget if args.budget is not None else (0.5 if args.quick else 1.5)
    names = args.detectors.split(",") if args.detectors else catalog.names()
    keep = 2 if args.quick else 4
    n_events = max(sizes) * (keep + 1)
    suffix = "" if device in (None, "cpu") else f"_{device.replace(':', '')}"
    report = Report(f"models{suffix}", "Model stage",
                    f"Model stage alone on {device or 'cpu'}: featurise + score + learn")
    print(f"generating {n_events:,} transactions and sensor readings ...", flush=True)
    tx, tx_y = transaction_events(n_events)
    sensors = sensor_events(n_events)
    streams = {"transactions": (tx, tx_y), "sequences": (tx, tx_y), "sensors": (sensors, None)}

    rows: list[dict[str, Any]] = []
    for B in sizes:
        cache: dict[str, Batches] = {}
        for name in names:
            domain = detector_domain(name)
            if domain not in cache:
                events, labels = streams[domain]
                cache[domain] = Batches(domain, events, labels, B, keep)
            row = bench_detector(name, cache[domain], device, budget)
            rows.append(row)
            print(f"  B={B:>6} {name:<18} total {row['total_eps']:>10,.0f}/s  (featurise {row['featurise_eps']:,.0f}, "
                  f"score {row['score_eps']:,.0f}, learn {row['learn_eps']:,.0f})", flush=True)
    proc_rows = []
    proc_sizes = [B for B in sizes if B <= 4096] or sizes[:1]  # it learns in chunks of 64 whatever the batch
    for domain in ("transactions", "sensors"):
        events = streams[domain][0]
        for B in proc_sizes:
            row = bench_processor(domain, events, B, device, budget)
            proc_rows.append(row)
            print(f"  StreamProcessor {domain} B={B}: {row['eps']:,.0f}/s", flush=True)

    headers = ["detector", "input", "batch", "featurise/s", "score/s", "learn/s", "total events/s", "featurise share"]
    table = [[r["detector"], r["domain"], r["batch"], r["featurise_eps"], r["score_eps"], r["learn_eps"],
              r["total_eps"], f"{r['featurise_share']:.0%}"] for r in rows]
    report.table("Per detector and batch size (events/s; sensors: events/s = windows/s)", headers, table)
    report.table("Deployed composition: StreamProcessor.process at default settings (events/s)",
                 ["domain", "detector", "batch", "events/s"],
                 [[r["domain"], r["detector"], r["batch"], r["eps"]] for r in proc_rows])

    def best(detector: str) -> dict[str, Any] | None:
        mine = [r for r in rows if r["detector"] == detector]
        return max(mine, key=lambda r: r["total_eps"]) if mine else None

    from pipeline.settings import Settings

    s = Settings()
    targets = []
    on_cpu = device in (None, "cpu")
    for domain, target, det in (("transactions", TX_TARGET, s.transactions.detector),
                                ("sensors", SENSOR_TARGET, s.sensors.detector)):
        b = best(det)
        if b is None:
            continue
        proc_best = max((r["eps"] for r in proc_rows if r["domain"] == domain), default=float("nan"))
        targets.append([f"{domain} ({det}, default)", f">= {target:,.0f}/s on CPU", b["total_eps"], b["batch"],
                        verdict(b["total_eps"] >= target) if on_cpu else "(GPU run)", proc_best,
                        verdict(proc_best >= target) if on_cpu else "(GPU run)"])
    report.table("Targets", ["stream", "target", "best total/s", "at batch", "model stage",
                             "StreamProcessor best/s", "as deployed"], targets)
    report.data = {"device": device or "cpu", "sizes": sizes, "rows": rows, "processor": proc_rows,
                   "targets": targets}
    report.save(update_md=not args.no_md)
    return report.data


if __name__ == "__main__":
    main()
