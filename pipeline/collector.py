"""The cyclic garbage collector in a worker process.

Start-up imports torch, River and Kafka clients and builds the models: ~0.5 M objects that live as long as the
process. With Python's default thresholds the collector walks them about ten times before the first event
(~2 s of a worker's start). The CLI relaxes the thresholds for its start-up; the worker's loop then freezes what
exists (`gc.freeze`: no later collection walks it) and restores the thresholds.
"""

from __future__ import annotations

import gc

STARTUP_THRESHOLDS = (100_000, 50, 100)
_restore: tuple[int, int, int] | None = None


def relax_for_startup() -> None:
    """Collect rarely until `freeze_long_lived()` (the CLI, before anything heavy is imported)."""
    global _restore
    if _restore is None:
        _restore = gc.get_threshold()
        gc.set_threshold(*STARTUP_THRESHOLDS)


def freeze_long_lived() -> None:
    """Collect, hide every object that exists now from later collections, and restore the thresholds."""
    global _restore
    gc.collect()
    gc.freeze()
    if _restore is not None:
        gc.set_threshold(*_restore)
        _restore = None
