"""Fraud-detection quality on the Fraud Detection Handbook's simulated transactions.

The raw transactions are streamed in time order through `TransactionFeatures` and a detector the
way the runner does it: each micro-batch is scored first, then learned from (progressive
validation); fraud labels are revealed 7 days after each transaction (an unlabelled transaction
counts as genuine after that). AUC ROC, Average Precision and Card Precision@100 are computed on
the book's four test weeks (2018-08-08 .. 2018-09-04) with its known-compromised-card rule, per
seed; the table shows mean ± std over seeds of the four-week means (and the spread over weeks).

    python bench/fraud_quality.py --check-features          # online features vs the book's file
    python bench/fraud_quality.py --models mlp,ae,hst --seeds 0 1 2
    python bench/fraud_quality.py --select                  # hyperparameter search on validation weeks

Hyperparameters are chosen on the validation weeks (assessment weeks starting 2018-07-04, 07-11,
07-18, 07-25) only; the test weeks are never looked at for a choice. The features do not depend on
the detector, so they are computed once per run (cached under the system temp dir) and reused for
every detector and seed; this is the same stream the runner would compute.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.metrics import week_metrics  # noqa: E402
from stream_models.dense_autoencoder import DenseAutoencoder, DenseAutoencoderConfig  # noqa: E402
from stream_models.fraud_detector import FraudDetector, FraudDetectorConfig  # noqa: E402
from stream_models.learner import OnlineLearner, OnlineLearnerConfig  # noqa: E402
from stream_models.lstm_classifier import LSTMClassifier, LSTMClassifierConfig  # noqa: E402
from stream_models.mlp_classifier import MLPClassifier, MLPClassifierConfig  # noqa: E402
from stream_models.thresholds import QuantileThreshold  # noqa: E402
from stream_models.transaction_features import TransactionFeatures, TransactionFeaturesConfig  # noqa: E402

DATA = Path(os.environ.get("STREAMWARDEN_FRAUD_DATA", ROOT.parent / "shared/datasets/fraud_handbook"))
if not DATA.exists():
    DATA = Path("/work/shared/datasets/fraud_handbook")
EPOCH0 = pd.Timestamp("2018-04-01").timestamp()  # TX_TIME_SECONDS = 0
DAY = 86_400.0
DELAY = 7 * DAY
TEST_WEEKS = (129, 136, 143, 150)  # 2018-08-08, 08-15, 08-22, 08-29 (day 0 = 2018-04-01)
VAL_WEEKS = (94, 101, 108, 115)  # 2018-07-04, 07-11, 07-18, 07-25
END_DAY = 157  # stream up to the end of 2018-09-04
MODEL_START_DAY = 61  # 2018-06-01: detectors see the stream from here (features run from day 0)
BATCH = 2048


# ---- data and features ---------------------------------------------------------------------------
def load_raw() -> pd.DataFrame:
    cols = ["TRANSACTION_ID", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT", "TX_TIME_SECONDS", "TX_TIME_DAYS",
            "TX_FRAUD"]  # TX_FRAUD_SCENARIO is never read
    return pd.read_csv(DATA / "transactions_raw.csv.gz", usecols=cols)


def stream_features(raw: pd.DataFrame, cfg: TransactionFeaturesConfig, keep_from: int,
                    keep_sequences: bool) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Runs the whole raw stream through TransactionFeatures in batches (labels 7 days late)."""
    feats = TransactionFeatures(cfg)
    ts = raw.TX_TIME_SECONDS.to_numpy(np.float64) + EPOCH0
    ids = raw.TRANSACTION_ID.astype(str).tolist()
    events = [SimpleNamespace(event_id=i, ts=t, card_id=c, terminal_id=m, amount=a) for i, t, c, m, a in zip(
        ids, ts.tolist(), raw.CUSTOMER_ID.astype(str).tolist(), raw.TERMINAL_ID.astype(str).tolist(),
        raw.TX_AMOUNT.tolist(), strict=True)]
    frauds = np.nonzero(raw.TX_FRAUD.to_numpy())[0]
    label_ts = ts[frauds] + DELAY
    revealed = 0
    X_out, S_out = [], []
    for s in range(0, len(events), BATCH):
        e = min(s + BATCH, len(events))
        upto = int(np.searchsorted(label_ts, ts[e - 1], side="right"))  # labels revealed by the batch end
        if upto > revealed:  # each label only counts for events at/after its reveal time
            sel = frauds[revealed:upto]
            feats.observe_labels([ids[i] for i in sel], np.ones(len(sel), np.int8), label_ts[revealed:upto])
            revealed = upto
        _, X = feats.update_many(events[s:e])
        if e > keep_from:
            lo = max(keep_from - s, 0)
            X_out.append(X[lo:])
            if keep_sequences:
                S_out.append(feats.last_sequences[lo:])
    return np.concatenate(X_out), (np.concatenate(S_out) if keep_sequences else None), feats.feature_names


def cached_features(raw: pd.DataFrame, cfg: TransactionFeaturesConfig, keep_from: int,
                    keep_sequences: bool) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    code = Path(ROOT / "stream_models/transaction_features.py").read_bytes()
    key = hashlib.sha256(code + repr((cfg, keep_from, len(raw))).encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"streamwarden_fraud_features_{key}.npz"
    if path.exists():
        z = np.load(path, allow_pickle=False)
        X, S, names = z["X"], z["S"], [str(n) for n in z["names"]]
    else:
        t0 = time.time()
        X, S, names = stream_features(raw, cfg, keep_from, keep_sequences=True)
        print(f"features: {len(raw)} transactions in {time.time() - t0:.1f} s", file=sys.stderr)
        np.savez(path, X=X, S=S, names=np.asarray(names))
    FEATURE_KEY[0] = hashlib.sha256(X.tobytes()).hexdigest()[:16]  # scores stay valid while values do
    return X, (S if keep_sequences else None), names


def check_features(raw: pd.DataFrame) -> int:
    """Compares the online book features with features_transformed.csv.gz; returns mismatching rows."""
    cfg = TransactionFeaturesConfig(sequence_length=0)
    t0 = time.time()
    X, _, names = stream_features(raw, cfg, 0, keep_sequences=False)
    took = time.time() - t0
    book = pd.read_csv(DATA / "features_transformed.csv.gz")
    ref = np.column_stack([raw.TX_AMOUNT.to_numpy()] + [book[n].to_numpy() for n in names[1:15]])
    bad = ~np.isclose(X[:, :15].astype(np.float64), ref, rtol=1e-5, atol=1e-4)
    rows = np.nonzero(bad.any(1))[0]
    print(f"features for {len(raw)} transactions in {took:.1f} s ({len(raw) / took:,.0f} tx/s)")
    print(f"rows differing from the book's features: {len(rows)} of {len(raw)}")
    for name, n in zip(names[:15], bad.sum(0), strict=True):
        if n:
            print(f"  {name}: {n}")
    if len(rows):
        t = raw.TX_TIME_SECONDS.to_numpy()
        c = raw.CUSTOMER_ID.to_numpy()
        same_second = [(i > 0 and t[i - 1] == t[i] and c[i - 1] == c[i]) or
                       (i + 1 < len(t) and t[i + 1] == t[i] and c[i + 1] == c[i]) for i in rows]
        print(f"  of which the card has another transaction in the same second: {sum(same_second)}")
    return len(rows)


# ---- detectors ----------------------------------------------------------------------------------
@dataclasses.dataclass
class Setup:
    """One detector + learner configuration."""

    kind: str  # mlp | lstm | ae | hst | composite
    model: dict[str, Any] = dataclasses.field(default_factory=dict)
    learner: dict[str, Any] = dataclasses.field(default_factory=dict)
    features: str = "all"  # all | book

    def label(self) -> str:
        parts = [f"{k}={v}" for k, v in {**self.model, **self.learner}.items()]
        return f"{self.kind}[{self.features}]" + (f" ({', '.join(parts)})" if parts else "")


DEFAULTS: dict[str, Setup] = {
    "mlp": Setup("mlp", {"hidden": (500,), "dropout": 0.2, "lr": 1e-3},
                 {"steps_per_update": 32, "batch_size": 512, "replay_capacity": 140_000, "positive_fraction": 0.0}),
    "lstm": Setup("lstm", {"lstm_hidden": 32, "head_hidden": 128, "dropout": 0.2, "lr": 1e-3, "ema_decay": 0.99,
                           "input_clip": 100.0},
                  {"steps_per_update": 16, "batch_size": 512, "replay_capacity": 140_000}),
    "composite": Setup("composite", {}, {"steps_per_update": 32, "batch_size": 512, "replay_capacity": 140_000}),
    "ae": Setup("ae", {"hidden": (100, 20), "lr": 1e-3},
                {"steps_per_update": 8, "batch_size": 512, "replay_capacity": 60_000}),
    "hst": Setup("hst"),
}


def build(setup: Setup, names: list[str], seed: int) -> tuple[Any, OnlineLearner | None]:
    if setup.kind == "mlp":
        det: Any = MLPClassifier(names, MLPClassifierConfig(seed=seed, **setup.model))
    elif setup.kind == "lstm":
        det = LSTMClassifier(names, LSTMClassifierConfig(seed=seed, **setup.model))
    elif setup.kind == "ae":
        det = DenseAutoencoder(names, DenseAutoencoderConfig(seed=seed, **setup.model))
    elif setup.kind == "composite":
        mlp = {k: v for k, v in DEFAULTS["mlp"].model.items()} | setup.model
        det = FraudDetector(names, FraudDetectorConfig(ae=DenseAutoencoderConfig(seed=seed, **DEFAULTS["ae"].model),
                                                      mlp=MLPClassifierConfig(seed=seed, **mlp)))
    elif setup.kind == "hst":
        from stream_models.halfspace_trees import HalfSpaceTreesDetector  # River baseline

        return HalfSpaceTreesDetector(feature_names=names, seed=seed, **setup.model), None
    else:
        raise ValueError(f"unknown detector kind {setup.kind!r}")
    lcfg = OnlineLearnerConfig(supervised=setup.kind != "ae", label_delay_s=DELAY, update_every_events=BATCH,
                               seed=seed, **setup.learner)
    return det, OnlineLearner(det, lcfg)


def run_stream(setup: Setup, X: np.ndarray, ts: np.ndarray, ids: list[str], y: np.ndarray, seed: int,
               progress: Callable[[str], None] | None = None) -> np.ndarray:
    """Score-then-learn over the stream in micro-batches; returns each event's score."""
    torch.manual_seed(seed)
    names = FEATURE_NAMES if X.ndim == 2 else FEATURE_NAMES
    det, learner = build(setup, names, seed)
    threshold = QuantileThreshold(0.99, warmup=BATCH)
    frauds = np.nonzero(y)[0]
    label_ts = ts[frauds] + DELAY
    revealed = 0
    scores = np.empty(len(X), np.float64)
    t0 = time.time()
    for s in range(0, len(X), BATCH):
        e = min(s + BATCH, len(X))
        now = float(ts[e - 1])
        Xb = X[s:e]
        sc = det.score_many(Xb)
        scores[s:e] = sc
        flags = threshold.classify_many(sc)
        threshold.update_many(sc, flags)
        if learner is None:
            det.learn_many(Xb)
            continue
        upto = int(np.searchsorted(label_ts, now, side="right"))
        if upto > revealed:
            learner.observe_labels([ids[i] for i in frauds[revealed:upto]], np.ones(upto - revealed, np.int8))
            revealed = upto
        learner.observe(Xb, flags, event_ids=ids[s:e], ts=ts[s:e])
        learner.maybe_update(now_ts=now)
        if progress and (s // BATCH) % 100 == 0:
            progress(f"{setup.kind} seed {seed}: {e}/{len(X)} events, {time.time() - t0:.0f} s")
    return scores


FEATURE_NAMES: list[str] = []
FEATURE_KEY: list[str] = [""]
MODEL_FILES = {  # the code each detector kind's scores depend on (part of the score cache key)
    "mlp": ("mlp_classifier.py", "learner.py"),
    "ae": ("dense_autoencoder.py", "mlp_classifier.py", "learner.py"),
    "lstm": ("lstm_classifier.py", "mlp_classifier.py", "learner.py"),
    "composite": ("fraud_detector.py", "dense_autoencoder.py", "mlp_classifier.py", "learner.py"),
    "hst": ("halfspace_trees.py",),
}


def run_cached(setup: Setup, X: np.ndarray, ts: np.ndarray, ids: list[str], y: np.ndarray, seed: int,
               progress: Callable[[str], None] | None = None) -> np.ndarray:
    """`run_stream`, with the scores cached under the temp dir (same config, seed, code and features)."""
    code = b"".join((ROOT / "stream_models" / f).read_bytes() for f in MODEL_FILES[setup.kind])
    key = hashlib.sha256(code + repr((setup.label(), seed, FEATURE_KEY[0], X.shape)).encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"streamwarden_fraud_scores_{key}.npy"
    if path.exists():
        return np.load(path)
    scores = run_stream(setup, X, ts, ids, y, seed, progress)
    np.save(path, scores)
    return scores


def evaluate(frame: pd.DataFrame, scores: np.ndarray, weeks: tuple[int, ...]) -> dict[str, list[float]]:
    df = frame.assign(predictions=np.nan)
    df.loc[df.index[-len(scores):], "predictions"] = scores
    out: dict[str, list[float]] = {"auc": [], "ap": [], "cp100": []}
    for w in weeks:
        m = week_metrics(df, w)
        for k in out:
            out[k].append(m[k])
    return out


def fmt(values: list[float]) -> str:
    return f"{np.mean(values):.4f} ± {np.std(values):.4f}"


# ---- main ---------------------------------------------------------------------------------------
LABEL_DERIVED = {
    "TERMINAL_ID_RISK_1DAY_WINDOW", "TERMINAL_ID_RISK_7DAY_WINDOW", "TERMINAL_ID_RISK_30DAY_WINDOW",
    "CARD_REVEALED_FRAUDS", "TERMINAL_FRAUD_RUN_LENGTH", "TERMINAL_FRAUD_RUN_AGE_DAYS",
    "TERMINAL_DAYS_SINCE_REVEALED_FRAUD", "TERMINAL_LAST_LABEL_FRAUD",
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check-features", action="store_true")
    ap.add_argument("--models", default="mlp,ae,hst")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--select", action="store_true", help="grid search on the validation weeks")
    ap.add_argument("--grid-items", default="", help='with --select: e.g. "mlp:0,2;ae:1" (default: all)')
    ap.add_argument("--override", default="", help='JSON {"mlp": {"model": {...}, "learner": {...}}}')
    ap.add_argument("--out", default=str(ROOT / "bench/results/fraud_quality.md"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    raw = load_raw()
    if args.check_features:
        return 0 if check_features(raw) <= 25 else 1

    keep_from = int(np.searchsorted(raw.TX_TIME_DAYS.to_numpy(), MODEL_START_DAY))
    end = int(np.searchsorted(raw.TX_TIME_DAYS.to_numpy(), END_DAY))
    raw = raw.iloc[:end]
    kinds = args.models.split(",")
    X, S, names = cached_features(raw, TransactionFeaturesConfig(), keep_from, keep_sequences="lstm" in kinds)
    FEATURE_NAMES[:] = names
    frame = raw[["TX_TIME_DAYS", "CUSTOMER_ID", "TX_FRAUD"]].reset_index(drop=True)
    part = raw.iloc[keep_from:]
    ts = part.TX_TIME_SECONDS.to_numpy(np.float64) + EPOCH0
    ids = part.TRANSACTION_ID.astype(str).tolist()
    y = part.TX_FRAUD.to_numpy()
    overrides = json.loads(args.override) if args.override else {}

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    def setup_for(kind: str) -> Setup:
        base = DEFAULTS[kind]
        o = overrides.get(kind, {})
        return Setup(kind, {**base.model, **o.get("model", {})}, {**base.learner, **o.get("learner", {})},
                     o.get("features", base.features))

    def data_for(setup: Setup) -> tuple[np.ndarray, list[str]]:
        arr = S if setup.kind == "lstm" else X
        if setup.features == "book":
            return arr[..., :15], names[:15]
        if setup.features == "unlabelled":  # no feature derived from labels: a truly label-free model
            keep = [i for i, n in enumerate(names) if n not in LABEL_DERIVED]
            return arr[..., keep], [names[i] for i in keep]
        return arr, names

    if args.select:
        items = {k: [int(i) for i in v.split(",")] for k, v in
                 (part.split(":") for part in args.grid_items.split(";") if part)}
        return select(items, frame, data_for, ts, ids, y, args.seeds[0], log, args.out)

    rows = []
    for kind in kinds:
        setup = setup_for(kind)
        data, fnames = data_for(setup)
        FEATURE_NAMES[:] = fnames
        per_seed: dict[str, list[float]] = {"auc": [], "ap": [], "cp100": []}
        fold_std: dict[str, list[float]] = {"auc": [], "ap": [], "cp100": []}
        val_seed: dict[str, list[float]] = {"auc": [], "ap": [], "cp100": []}
        for seed in args.seeds:
            sc = run_cached(setup, data, ts, ids, y, seed, log)
            res = evaluate(frame, sc, TEST_WEEKS)
            val = evaluate(frame, sc, VAL_WEEKS)
            log(f"{setup.label()} seed {seed}: test " + ", ".join(f"{k} {np.mean(v):.4f}" for k, v in res.items())
                + " | validation " + ", ".join(f"{k} {np.mean(v):.4f}" for k, v in val.items()))
            for k in per_seed:
                per_seed[k].append(float(np.mean(res[k])))
                fold_std[k].append(float(np.std(res[k])))
                val_seed[k].append(float(np.mean(val[k])))
        rows.append((setup.label(), per_seed, fold_std, val_seed))
    table = ["| detector | AUC ROC | Average precision | Card Precision@100 |", "|---|---|---|---|"]
    for label, per_seed, _, _ in rows:
        table.append(f"| {label} | {fmt(per_seed['auc'])} | {fmt(per_seed['ap'])} | {fmt(per_seed['cp100'])} |")
    table += ["", "Validation weeks 2018-07-04..07-31, same runs (the weeks hyperparameters were chosen on):", "",
              "| detector | AUC ROC | Average precision | Card Precision@100 |", "|---|---|---|---|"]
    for label, _, _, val_seed in rows:
        table.append(f"| {label} | {fmt(val_seed['auc'])} | {fmt(val_seed['ap'])} | {fmt(val_seed['cp100'])} |")
    spread = ["", "Spread over the four test weeks (std, averaged over seeds):", ""]
    for label, _, fold_std, _ in rows:
        spread.append(f"- {label}: AUC {np.mean(fold_std['auc']):.4f}, AP {np.mean(fold_std['ap']):.4f}, "
                      f"CP@100 {np.mean(fold_std['cp100']):.4f}")
    header = [f"Test weeks 2018-08-08..09-04, online (score then learn, batches of {BATCH}, labels 7 days late), "
              f"seeds {args.seeds}; mean ± std over seeds of the four-week mean. Detectors see the stream from "
              "2018-06-01 (features from 2018-04-01). composite = the MLP fed with the dense AE's log error; "
              "hst = River HalfSpaceTrees learning every event in order.", ""]
    text = "\n".join(header + table + spread) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    return 0


GRIDS: dict[str, list[dict[str, Any]]] = {
    "mlp": [
        {},
        {"model": {"ema_decay": 0.99}},
        {"learner": {"positive_fraction": 0.2}},
        {"model": {"lr": 3e-4}},
        {"learner": {"steps_per_update": 64}},
        {"learner": {"replay_capacity": 280_000}},
        {"features": "book"},
        {"model": {"ema_decay": 0.99}, "learner": {"steps_per_update": 64, "replay_capacity": 280_000}},
        {"model": {"ema_decay": 0.99, "input_clip": 100.0}},
        {"model": {"ema_decay": 0.99, "input_clip": 100.0}, "learner": {"positive_fraction": 0.2}},
        {"model": {"ema_decay": 0.99, "input_clip": 100.0}, "learner": {"positive_fraction": 0.2, "steps_per_update": 64}},
    ],
    "ae": [
        {},
        {"model": {"hidden": (64, 8)}},
        {"features": "book"},
    ],
}


def select(items: dict[str, list[int]], frame: pd.DataFrame, data_for: Callable[..., Any], ts: np.ndarray,
           ids: list[str], y: np.ndarray, seed: int, log: Callable[[str], None], out: str) -> int:
    """One seed per configuration, scored on the validation weeks only."""
    lines = ["| configuration | val AUC | val AP | val CP@100 |", "|---|---|---|---|"]
    for kind, grid in GRIDS.items():
        if items and kind not in items:
            continue
        for i, change in enumerate(grid):
            if items and i not in items[kind]:
                continue
            base = DEFAULTS[kind]
            setup = Setup(kind, {**base.model, **change.get("model", {})},
                          {**base.learner, **change.get("learner", {})}, change.get("features", base.features))
            data, fnames = data_for(setup)
            FEATURE_NAMES[:] = fnames
            sc = run_cached(setup, data, ts, ids, y, seed)
            res = evaluate(frame, sc, VAL_WEEKS)
            line = f"| {setup.label()} | {fmt(res['auc'])} | {fmt(res['ap'])} | {fmt(res['cp100'])} |"
            log(line)
            lines.append(line)
    text = f"Validation weeks 2018-07-04..07-31 (mean ± std over the 4 weeks), seed {seed}\n\n" + "\n".join(lines)
    print(text)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with Path(out).open("a") as fh:
        fh.write(text + "\n\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
