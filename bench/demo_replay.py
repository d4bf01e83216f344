"""The demo's own simulated streams for other seeds, replayed through `streamwarden.run_backtest` (the function the
`streamwarden backtest` CLI calls) with shipped settings, and scored like `streamwarden demo`'s summary. Settings
are chosen on seeds other than the demo's 0; `streamwarden demo` itself gives seed 0's figures live. Also printed:
the frauds alerted per simulator scenario (compromised terminals look normal to a label-free score: their
compromise lasts 7 days, as long as the chargebacks take).

    .venv/bin/python -m bench.demo_replay --seeds 1 2      # writes bench/results/demo_replay.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from bench.common import write_result

ROOT = Path(__file__).resolve().parents[1]


def replay(seed: int) -> dict[str, object]:
    import streamwarden as sw
    from pipeline.demo import DemoOptions, alert_quality, demo_simulators

    options = DemoOptions(seed=seed)
    settings = sw.load_settings()
    tx_sim, sensor_sim = demo_simulators(options, "replay")
    folder = Path(tempfile.mkdtemp())
    parts = []
    for domain, sim, positive, delay in (("transactions", tx_sim, tx_sim.is_fraud, 7 * 86_400.0),
                                         ("sensors", sensor_sim, sensor_sim.is_anomaly, None)):
        path = sim.write(folder / f"{domain}.csv")
        scores = sw.run_backtest(settings, str(path), domain=domain, label_delay_s=delay,
                                 **({"columns": {}} if domain == "sensors" else {})).scores
        frame = sim.to_frame()
        truth = pd.Series(positive.astype(int), index=frame["event_id"])
        scores["label"] = scores["event_id"].map(truth).astype(float)
        parts.append(scores)
        if domain == "transactions":
            scenario = scores["event_id"].map(pd.Series(frame["scenario"].to_numpy(), index=frame["event_id"]))
            by_scenario = scores.groupby(scenario)["alert"].agg(["size", "sum"])
            caught = {str(k): f"{int(r['sum'])} of {int(r['size'])}" for k, r in by_scenario.iterrows() if k != "genuine"}
    out = alert_quality(pd.concat(parts, ignore_index=True), options, settings.sensors.episode_gap_rows)
    return {**out, "transactions frauds alerted, by scenario": caught}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", default=str(ROOT / "bench/results/demo_replay.json"))
    args = ap.parse_args(argv)
    results = {}
    for seed in args.seeds:
        results[str(seed)] = replay(seed)
        print(seed, results[str(seed)], flush=True)
    write_result(Path(args.out), {"when": datetime.now(UTC).isoformat(timespec="seconds"),
                                  "command": "python -m bench.demo_replay --seeds " + " ".join(map(str, args.seeds)),
                                  "seeds": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
