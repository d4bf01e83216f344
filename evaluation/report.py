"""Backtest metrics, plots and the HTML report, from the per-event score table.

The score table has one row per event: domain, event_id, entity, ts (event time, epoch s),
score (NaN when the event could not be scored yet), threshold, alert (bool), label (0/1, NaN
when unknown), and `score__<detector>` / `alert__<detector>` columns for challengers.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

SCORE_COLUMNS = ["domain", "event_id", "entity", "ts", "score", "threshold", "alert", "label"]


@dataclass
class DetectorMetrics:
    """Quality of one detector on one domain."""

    domain: str
    detector: str
    events: int = 0
    scored: int = 0
    labelled: int = 0
    positives: int = 0
    alerts: int = 0
    roc_auc: float | None = None
    average_precision: float | None = None
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0
    far_pct: float | None = None  # false alarm rate, % of negatives flagged
    mar_pct: float | None = None  # missed alarm rate, % of positives missed
    alerts_per_hour: float | None = None
    detection_delay_s: float | None = None  # median over detected anomalous segments
    detected_segments: int = 0  # anomalous segments (runs of positive events of one entity) with an alert
    anomalous_segments: int = 0  # anomalous segments
    extra: dict[str, float | None] = field(default_factory=dict)  # NAB, Card Precision@k

    def row(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(data.pop("extra"))
        return data


def _finite(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def detector_metrics(
    frame: pd.DataFrame, domain: str, detector: str, score_col: str = "score", alert_col: str = "alert", k: int = 100
) -> DetectorMetrics:
    """Ranking metrics on scored, labelled rows; operating-point metrics from the alert flags."""
    from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score

    m = DetectorMetrics(domain=domain, detector=detector, events=len(frame))
    scored = frame[np.isfinite(frame[score_col].to_numpy(dtype=float))]
    m.scored = len(scored)
    m.alerts = int(frame[alert_col].sum())
    span_h = (frame["ts"].max() - frame["ts"].min()) / 3600.0 if len(frame) > 1 else 0.0
    m.alerts_per_hour = _finite(m.alerts / span_h) if span_h > 0 else None
    labelled = scored[scored["label"].notna()]
    m.labelled = len(labelled)
    if labelled.empty:
        return m
    y = labelled["label"].to_numpy(dtype=int)
    s = labelled[score_col].to_numpy(dtype=float)
    pred = labelled[alert_col].to_numpy(dtype=bool)
    m.positives = int(y.sum())
    if 0 < m.positives < len(y):
        m.roc_auc = _finite(roc_auc_score(y, s))
        m.average_precision = _finite(average_precision_score(y, s))
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(y, pred, labels=[0, 1]).ravel())
    m.tp, m.fp, m.tn, m.fn = tp, fp, tn, fn
    m.precision = tp / (tp + fp) if tp + fp else None
    m.recall = tp / (tp + fn) if tp + fn else None
    m.f1 = tp / (tp + (fp + fn) / 2) if tp + fp + fn else None
    m.far_pct = 100.0 * fp / (fp + tn) if fp + tn else None
    m.mar_pct = 100.0 * fn / (fn + tp) if fn + tp else None
    _delays(m, frame, alert_col)
    if domain == "transactions":
        m.extra[f"card_precision@{k}"] = card_precision_at_k(labelled, score_col, k)
    else:
        m.extra.update(_nab(frame, alert_col))
    return m


def _delays(m: DetectorMetrics, frame: pd.DataFrame, alert_col: str) -> None:
    """Per anomalous segment (a run of positive events of one entity): time from its start to its first alert."""
    delays: list[float] = []
    segments = 0
    for _, group in frame[frame["label"].notna()].sort_values("ts", kind="stable").groupby("entity", sort=False):
        y = group["label"].to_numpy(dtype=int)
        if not y.any():
            continue
        ts = group["ts"].to_numpy(dtype=float)
        hit = group[alert_col].to_numpy(dtype=bool)
        starts = np.flatnonzero(np.diff(y, prepend=0) == 1)
        ends = np.flatnonzero(np.diff(y, append=0) == -1)
        for a, b in zip(starts, ends, strict=True):
            segments += 1
            alerted = np.flatnonzero(hit[a : b + 1])
            if len(alerted):
                delays.append(float(ts[a + alerted[0]] - ts[a]))
    m.anomalous_segments = segments
    m.detected_segments = len(delays)
    m.detection_delay_s = _finite(float(np.median(delays))) if delays else None


def card_precision_at_k(labelled: pd.DataFrame, score_col: str, k: int) -> float | None:
    """The Fraud Detection Handbook's daily Card Precision@k (pipeline.metrics), days in event time."""
    from pipeline.metrics import card_precision_at_k as book_cp_at_k

    frame = labelled.assign(day=(labelled["ts"] // 86_400).astype(int), label=labelled["label"].astype(int))
    return _finite(book_cp_at_k(frame, k, day_col="day", card_col="entity", label_col="label", score_col=score_col))


def _nab(frame: pd.DataFrame, alert_col: str) -> dict[str, float | None]:
    """NAB (standard / LowFP / LowFN) with each entity as one file; true changepoints = label rises."""
    from pipeline.nab import changepoints_from_alarms, nab_scores

    times, true_cp, pred_cp = [], [], []
    for _, group in frame.sort_values("ts").groupby("entity"):
        labels = group["label"].fillna(0).to_numpy(dtype=int)
        if "changepoint" in group:
            cp = group["changepoint"].fillna(0).to_numpy(dtype=int)
        else:
            cp = np.diff(labels, prepend=0) == 1
        times.append(pd.to_datetime(group["ts"].to_numpy(), unit="s").to_numpy())
        true_cp.append(np.asarray(cp, dtype=int))
        pred_cp.append(changepoints_from_alarms(group[alert_col].to_numpy(dtype=int)))
    if not any(c.any() for c in true_cp):
        return {}
    scores = nab_scores(times, true_cp, pred_cp)
    return {"nab_standard": scores.standard, "nab_low_fp": scores.low_fp, "nab_low_fn": scores.low_fn}


def all_metrics(frame: pd.DataFrame, k: int = 100) -> list[DetectorMetrics]:
    """Champion and challenger metrics for each domain in the score table."""
    results = []
    for domain, part in frame.groupby("domain", sort=True):
        champion = str(part["detector"].iloc[0]) if "detector" in part else "champion"
        results.append(detector_metrics(part, str(domain), champion, k=k))
        for col in part.columns:
            if col.startswith("score__") and part[col].notna().any():
                name = col.removeprefix("score__")
                results.append(detector_metrics(part, str(domain), name, col, f"alert__{name}", k=k))
    return results


# ---------------------------------------------------------------------------------------- plots
def _plots(frame: pd.DataFrame, domain: str, out: Path, top_entities: int = 4) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    written: list[Path] = []
    scored = frame[np.isfinite(frame["score"].to_numpy(dtype=float))]
    t = pd.to_datetime(scored["ts"], unit="s")

    fig, ax = plt.subplots(figsize=(11, 3.5))
    ax.scatter(t, scored["score"], s=2, color="tab:blue", alpha=0.5, label="score")
    ax.plot(t, scored["threshold"], color="tab:orange", lw=1, label="threshold")
    flagged = scored[scored["alert"].astype(bool)]
    ax.scatter(pd.to_datetime(flagged["ts"], unit="s"), flagged["score"], marker="x", color="tab:red", s=18, label="alert")
    positive = scored[scored["label"] == 1]
    if len(positive):
        ax.scatter(pd.to_datetime(positive["ts"], unit="s"), positive["score"], facecolors="none",
                   edgecolors="tab:green", s=28, label="true label")
    ax.set_yscale("symlog")
    ax.set_title(f"{domain}: scores over event time")
    ax.legend(loc="upper left", fontsize=8)
    written.append(_save(fig, out / f"{domain}_timeline.png"))

    labelled = scored[scored["label"].notna()]
    y = labelled["label"].to_numpy(dtype=int)
    if 0 < y.sum() < len(y):
        s = labelled["score"].to_numpy(dtype=float)
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        precision, recall, _ = precision_recall_curve(y, s)
        axes[0].plot(recall, precision)
        axes[0].set(xlabel="recall", ylabel="precision", title=f"{domain}: precision-recall")
        fpr, tpr, _ = roc_curve(y, s)
        axes[1].plot(fpr, tpr)
        axes[1].plot([0, 1], [0, 1], ls="--", color="grey")
        axes[1].set(xlabel="false positive rate", ylabel="true positive rate", title=f"{domain}: ROC")
        written.append(_save(fig, out / f"{domain}_pr_roc.png"))

    top = frame[frame["alert"].astype(bool)].groupby("entity")["score"].max().nlargest(top_entities).index
    if len(top):
        fig, axes = plt.subplots(len(top), 1, figsize=(11, 2.2 * len(top)), squeeze=False)
        for ax, entity in zip(axes[:, 0], top, strict=True):
            rows = frame[frame["entity"] == entity]
            rt = pd.to_datetime(rows["ts"], unit="s")
            ax.plot(rt, rows["score"], lw=1, marker=".", ms=3)
            ax.plot(rt, rows["threshold"], lw=1, color="tab:orange")
            hit = rows[rows["alert"].astype(bool)]
            ax.scatter(pd.to_datetime(hit["ts"], unit="s"), hit["score"], marker="x", color="tab:red", zorder=3)
            pos = rows[rows["label"] == 1]
            for ts in pd.to_datetime(pos["ts"], unit="s"):
                ax.axvline(ts, color="tab:green", alpha=0.3, lw=1)
            ax.set_title(f"{entity}", fontsize=9)
        written.append(_save(fig, out / f"{domain}_top_entities.png"))
    return written


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------- report
def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def write_report(frame: pd.DataFrame, out_dir: Path, *, title: str = "streamwarden backtest",
                 summary: dict[str, Any] | None = None, k: int = 100) -> Path:
    """Write scores (Parquet, CSV fallback), metrics.json, PNG plots and index.html; returns index.html."""
    out_dir.mkdir(parents=True, exist_ok=True)
    scores_file = out_dir / "scores.parquet"
    try:
        frame.to_parquet(scores_file, index=False)
    except ImportError:
        scores_file = out_dir / "scores.csv"
        frame.to_csv(scores_file, index=False)
    metrics = all_metrics(frame, k=k)
    rows = [m.row() for m in metrics]
    (out_dir / "metrics.json").write_text(json.dumps({"summary": summary or {}, "metrics": rows}, indent=2, default=str))
    images: list[Path] = []
    for domain, part in frame.groupby("domain", sort=True):
        images.extend(_plots(part, str(domain), out_dir))
    columns = list(rows[0]) if rows else []
    table = "".join(
        "<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows
    )
    summary_rows = "".join(f"<tr><th>{html.escape(str(k_))}</th><td>{_fmt(v)}</td></tr>" for k_, v in (summary or {}).items())
    figures = "".join(f'<figure><img src="{p.name}" alt="{p.stem}"><figcaption>{p.stem}</figcaption></figure>' for p in images)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}img{{max-width:100%}}</style></head><body>
<h1>{html.escape(title)}</h1><table>{summary_rows}</table>
<h2>Metrics</h2><div style="overflow-x:auto"><table><tr>{''.join(f'<th>{html.escape(c)}</th>' for c in columns)}</tr>{table}</table></div>
<h2>Plots</h2>{figures}
<p>Per-event scores: <a href="{scores_file.name}">{scores_file.name}</a> (event_id, entity, ts, score, threshold, alert, label).</p>
</body></html>"""
    index = out_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
