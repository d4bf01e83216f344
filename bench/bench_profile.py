"""Where the end-to-end transactions worker spends its time: cProfile of one run, stage by stage.

    .venv/bin/python -m bench.bench_profile                       # 30k events, max_records 2048
    .venv/bin/python -m bench.bench_profile --events 10000 --batch 512

The worker is built exactly as `streamwarden run` builds it (see bench.bench_pipeline) and consumes a
freshly produced 6-partition topic from real Kafka, alerting to real Redis, under cProfile
(deterministic, main thread; kafka-python's own IO thread is not profiled, its work shows as time
spent waiting in `poll`), from the end of the first batch (model built, lazy imports done) to the
batch that reaches the last record, so start-up and the shutdown checkpoint are left out. Profiling slows Python-heavy code more than C code, so the shares are
the thing to read, not the absolute rate. The raw profile is written to
`.streamwarden/bench/pipeline.prof` (`python -m pstats` or snakeviz can open it).
"""

from __future__ import annotations

import argparse
import pstats
from collections.abc import Sequence
from typing import Any

from bench.common import ROOT, Report

PROFILE_FILE = ROOT / ".streamwarden" / "bench" / "pipeline.prof"

# (label, file suffix, function name, parent label for indentation)
STAGES: tuple[tuple[str, str, str, int], ...] = (
    ("BatchConsumer.poll (Kafka fetch + Record objects)", "ingest/consumer.py", "poll", 0),
    ("Runner.process (one batch)", "pipeline/runner.py", "process", 0),
    ("decode_batch (msgspec decode + validate)", "ingest/decode.py", "decode_batch", 1),
    ("Runner._score (model + alert objects)", "pipeline/runner.py", "_score", 1),
    ("StreamProcessor.process (model stage)", "pipeline/domains.py", "process", 2),
    ("TransactionFeaturizer.update (features)", "pipeline/domains.py", "update", 3),
    ("StreamProcessor._chunk (per learn_every chunk)", "pipeline/domains.py", "_chunk", 3),
    ("ChampionBoard.score (forward pass + threshold)", "pipeline/champion.py", "score", 4),
    ("explain_many (top features of alerts)", "stream_models/mlp_classifier.py", "explain_many", 4),
    ("StreamProcessor._block (zero-padded chunk)", "pipeline/domains.py", "_block", 4),
    ("ChampionBoard.remember (scores for leaderboard)", "pipeline/champion.py", "remember", 4),
    ("StreamProcessor._learn (end of chunk)", "pipeline/domains.py", "_learn", 3),
    ("OnlineLearner.maybe_update (replay steps)", "stream_models/learner.py", "maybe_update", 4),
    ("detector.learn_many (Adam steps)", "stream_models/mlp_classifier.py", "learn_many", 5),
    ("OnlineLearner.observe", "stream_models/learner.py", "observe", 4),
    ("threshold.update_many", "stream_models/thresholds.py", "update_many", 4),
    ("DriftMonitor.update_many (ADWIN)", "stream_models/drift.py", "update_many", 4),
    ("Runner.commit (flush sinks + commit offsets)", "pipeline/runner.py", "commit", 0),
    ("RedisAlertSink.flush", "sinks/redis_sink.py", "flush", 1),
    ("DeadLetterQueue.flush", "ingest/dlq.py", "flush", 1),
    ("BatchConsumer.commit", "ingest/consumer.py", "commit", 1),
)


def short(path: str) -> str:
    for marker in ("site-packages/", str(ROOT) + "/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def stage_rows(stats: pstats.Stats) -> list[dict[str, Any]]:
    table = stats.stats  # type: ignore[attr-defined]  # {(file, line, func): (cc, nc, tt, ct, callers)}
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = [{"stage": "profiled span (after the first batch, to the last record)", "depth": 0, "calls": 1,
             "seconds": total, "share": 1.0}]
    for label, suffix, func, depth in STAGES:
        hits = [(v[1], v[3]) for (f, _, fn), v in table.items() if fn == func and f.endswith(suffix)]
        if hits:
            ct = sum(h[1] for h in hits)
            rows.append({"stage": label, "depth": depth + 1, "calls": sum(h[0] for h in hits), "seconds": ct,
                         "share": ct / total})
    return rows


def top_rows(stats: pstats.Stats, n: int) -> list[dict[str, Any]]:
    table = stats.stats  # type: ignore[attr-defined]
    total = stats.total_tt  # type: ignore[attr-defined]
    ranked = sorted(table.items(), key=lambda kv: kv[1][2], reverse=True)[:n]
    return [{"function": f"{short(f)}:{line}({fn})", "calls": v[1], "tottime": v[2], "cumtime": v[3],
             "share": v[2] / total} for (f, line, fn), v in ranked]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--batch", type=int, default=2048, help="runner.max_records")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--no-md", action="store_true")
    args = parser.parse_args(argv)
    from bench.bench_pipeline import PARTITIONS, environment, pipeline_run, produce, simulated

    with environment({"transactions": PARTITIONS, "labels": 1}) as env:
        produce(env, env.topics["transactions"], "transactions", simulated("transactions", args.events))
        run = pipeline_run(env, "transactions", args.events, args.batch, "profile", profile_to=PROFILE_FILE)
    stats = pstats.Stats(str(PROFILE_FILE))
    stages = stage_rows(stats)
    top = top_rows(stats, args.top)
    report = Report("profile", "Profile", "Profile of the end-to-end transactions worker (cProfile)")
    report.add(f"{args.events:,} transactions, max_records {args.batch}, detector {run['detector']}, "
               f"{run['alerts']} alerts; {run['rate']:,.0f} events/s under the profiler. "
               f"Raw profile: `{PROFILE_FILE.relative_to(ROOT)}`.")
    report.table("Time by stage (cumulative seconds, share of the profiled span)",
                 ["stage", "calls", "seconds", "share"],
                 [["· " * r["depth"] + r["stage"], r["calls"], round(r["seconds"], 2), f"{r['share']:.1%}"]
                  for r in stages])
    report.table(f"Top {args.top} functions by own time", ["function", "calls", "own s", "cum s", "own share"],
                 [[f"`{r['function']}`", r["calls"], round(r["tottime"], 2), round(r["cumtime"], 2), f"{r['share']:.1%}"]
                  for r in top])
    report.data = {"run": run, "stages": stages, "top": top, "events": args.events, "batch": args.batch}
    report.save(update_md=not args.no_md)
    return report.data


if __name__ == "__main__":
    main()
