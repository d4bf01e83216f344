"""A live worker for the chaos tests: `streamwarden run`'s own wiring plus a scored-event log.

Run as `python -m tests.reliability.worker_main`; settings come from the environment exactly as
for `streamwarden run` (STREAMWARDEN_KAFKA, STREAMWARDEN_REDIS_URL, STREAMWARDEN_TOPICS__...).
Extra variables:
- SW_SCORED_LOG: file each scored event is appended to as "partition offset event_id score";
- SW_IDLE_TIMEOUT: stop (flush, commit, checkpoint) after this many seconds without records;
- SW_MAX_EVENTS: stop the same way after this many records;
- SW_FEATURES_LOG: file each transaction's feature row is appended to as "event_id f1 f2 ...".
Partition handover and model sync are plain settings (STREAMWARDEN_STATE__STORE,
STREAMWARDEN_MODEL_SYNC__ENABLED, ...), handled by `build_live_runner` itself.
"""

from __future__ import annotations

import os
import sys
from typing import Any


def _scored_log(path: str) -> Any:
    out = open(path, "a", buffering=1 << 16, encoding="utf-8")  # noqa: SIM115 - closed at exit

    def observer(domain: str, events: Any, records: Any, batch: Any) -> None:
        out.write("".join(f"{r.partition} {r.offset} {e.event_id} {float(s)!r}\n"
                          for e, r, s in zip(events, records, batch.scores, strict=True)))
        out.flush()  # in the OS's hands: survives a kill -9 of this process

    return observer, out


def _log_features(runner: Any, path: str) -> None:
    """Append "event_id f1 f2 ..." per featurised transaction (the features the detector saw)."""
    out = open(path, "a", encoding="utf-8")  # noqa: SIM115 - the OS closes it at exit
    for processor in runner.processors.values():
        featurizer = processor.featurizer
        if processor.domain != "transactions":
            continue
        own_update = featurizer.update

        def update(events: Any, own_update: Any = own_update) -> Any:
            keys, inputs, ready = own_update(events)
            rows = inputs["rows"]  # (B, F)
            out.write("".join(f"{e.event_id} {' '.join(map(repr, row.tolist()))}\n"
                              for e, row in zip(events, rows, strict=True)))
            out.flush()
            return keys, inputs, ready

        featurizer.update = update


def main() -> int:
    from pipeline.observability import configure_logging
    from pipeline.settings import load_settings
    from pipeline.worker import build_live_runner

    settings = load_settings()
    configure_logging("INFO", "text")
    idle = os.environ.get("SW_IDLE_TIMEOUT")
    max_events = os.environ.get("SW_MAX_EVENTS")
    runner, close = build_live_runner(settings, idle_timeout_s=float(idle) if idle else None,
                                      max_events=int(max_events) if max_events else None)
    observer, log_file = _scored_log(os.environ["SW_SCORED_LOG"])
    runner.observers.append(observer)
    if os.environ.get("SW_FEATURES_LOG"):
        _log_features(runner, os.environ["SW_FEATURES_LOG"])
    runner.install_signal_handlers()
    print(f"worker {os.getpid()} starting", file=sys.stderr, flush=True)
    try:
        stats = runner.run()
    finally:
        close()
        log_file.close()
    print(f"worker {os.getpid()} stopped: events={stats.events} alerts={stats.alerts} rejects={stats.rejects}",
          file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
