"""Promotion requests and the published leaderboard: small files in the state dir.

Promotion is asked for with a small file, never applied mid-stream: `streamwarden models
promote NAME` writes `<state_dir>/promote-<domain>` holding the contender's name; the worker
reads it at its next checkpoint boundary, switches the champion, deletes the file and writes
`<state_dir>/leaderboard-<domain>.json` (which `streamwarden models compare` prints).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger("pipeline.promotion")


def promotion_file(state_dir: Path, domain: str) -> Path:
    return state_dir / f"promote-{domain}"


def leaderboard_file(state_dir: Path, domain: str) -> Path:
    return state_dir / f"leaderboard-{domain}.json"


def request_promotion(state_dir: Path, domain: str, name: str) -> Path:
    """Ask running workers to make `name` the champion at their next checkpoint."""
    return _atomic_write(promotion_file(state_dir, domain), name + "\n")


def take_promotion(state_dir: Path, domain: str) -> str | None:
    """The pending promotion request, removed once read (None when there is none)."""
    path = promotion_file(state_dir, domain)
    try:
        name = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    path.unlink(missing_ok=True)
    return name or None


def write_leaderboard(state_dir: Path, domain: str, rows: list[dict[str, Any]]) -> Path:
    return _atomic_write(leaderboard_file(state_dir, domain), json.dumps(rows, indent=2))


def read_leaderboard(state_dir: Path, domain: str) -> list[dict[str, Any]] | None:
    path = leaderboard_file(state_dir, domain)
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _atomic_write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def checkpoint_hook(state_dir: Path) -> Any:
    """Runner checkpoint hook: apply pending promotion requests, then publish each domain's leaderboard."""

    def apply(runner: Any) -> None:
        for processor in runner.processors.values():
            board = getattr(processor, "board", None)
            name = take_promotion(state_dir, processor.domain)
            if name and board is not None:
                try:
                    board.promote(name)
                except ValueError as exc:
                    log.error("promotion refused", extra={"error": str(exc)})
            if board is not None:
                rows = board.leaderboard()
                for row in rows:
                    row.update(warming_up=not processor.armed(row["detector"]), warmup=processor.warmup_progress())
                write_leaderboard(state_dir, processor.domain, rows)

    return apply
