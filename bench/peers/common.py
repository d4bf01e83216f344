"""What every peer shares: its command line, the 10 %/90 % meter, and the River model a user would write."""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from typing import Any

RESULT_TAG = "PEER_RESULT "
IDLE_S = 5.0  # a peer that sees no record for this long stops (the topic held fewer events than expected)


def peer_args(description: str, argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--events", type=int, required=True, help="events on the topic: stop after this many")
    ap.add_argument("--domain", default="transactions", choices=["transactions", "sensors"])
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    return ap.parse_args(argv)


class Meter:
    """Counts processed events; notes the time and count when 10 % and 90 % of the stream have passed."""

    def __init__(self, total: int) -> None:
        self.total, self.count = total, 0
        self.lo, self.hi = math.ceil(0.1 * total), math.ceil(0.9 * total)
        self.at_lo: tuple[float, int] | None = None
        self.at_hi: tuple[float, int] | None = None
        self.idle = False

    def add(self, n: int) -> bool:
        """Count n more events; True once the whole stream is done."""
        self.count += n
        if self.at_lo is None and self.count >= self.lo:
            self.at_lo = (time.perf_counter(), self.count)
        if self.at_hi is None and self.count >= self.hi:
            self.at_hi = (time.perf_counter(), self.count)
        return self.count >= self.total

    def drain(self, poll: Callable[[], int]) -> None:
        """Call `poll()` (it returns the events it handled) until the stream is done or IDLE_S pass without any."""
        last = time.monotonic()
        while True:
            n = poll()
            if n:
                last = time.monotonic()
                if self.add(n):
                    return
            elif time.monotonic() - last > IDLE_S:
                self.idle = True
                return

    def report(self, **notes: Any) -> None:
        steady = None
        if self.at_lo and self.at_hi and self.at_hi[0] > self.at_lo[0]:
            steady = (self.at_hi[1] - self.at_lo[1]) / (self.at_hi[0] - self.at_lo[0])
        print(RESULT_TAG + json.dumps({"events": self.count, "steady_events_per_s": steady,
                                       "stopped_on_idle": self.idle, **notes}), flush=True)


def river_model() -> Any:
    """River's own QuantileFilter example (MinMaxScaler | QuantileFilter(HalfSpaceTrees)), at q=0.99."""
    from river import anomaly, compose, preprocessing

    return compose.Pipeline(preprocessing.MinMaxScaler(),
                            anomaly.QuantileFilter(anomaly.HalfSpaceTrees(seed=42), q=0.99))


def features(event: dict[str, Any], domain: str) -> dict[str, float]:
    """A few numeric fields of a transaction (amount, hour of day, online or not); a sensor's raw readings."""
    if domain == "sensors":
        return event["readings"]
    return {"amount": event["amount"], "hour": event["ts"] % 86400 / 3600,
            "online": 1.0 if event.get("channel") == "ecom" else 0.0}


def score_and_learn(model: Any, x: dict[str, float]) -> tuple[float, bool]:
    score = model.score_one(x)
    flagged = model["QuantileFilter"].classify(score)
    model.learn_one(x)
    return score, flagged
