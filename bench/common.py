"""Shared benchmark plumbing: machine facts, tables, JSON results and the BENCHMARKS.md sections.

Every benchmark prints a table, writes `bench/results/<name>.json` (numbers + machine + command)
and `bench/results/<name>.md` (the markdown block), and replaces its own block in BENCHMARKS.md
between `<!-- bench:<name> -->` and `<!-- /bench:<name> -->` inside the section it belongs to.
Nothing outside those markers is touched, so other tools may append to BENCHMARKS.md freely.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"

SECTIONS = ("Throughput and latency", "Model stage", "Memory", "Profile", "Quality")
QUALITY_POINTER = (
    "Filled by `bench/fraud_quality.py` (Fraud Detection Handbook protocol) and "
    "`bench/skab_quality.py` (SKAB protocol)."
)
SKELETON = (
    "# streamwarden benchmarks\n\n"
    "Written by `make bench` (`python -m bench.run_all`; `--quick` for a short run). Each block says "
    "when, on which commit and machine, and with which exact command its numbers were taken; the raw "
    "numbers are in `bench/results/*.json`. Benchmarks are not tests: numbers move with the load "
    "of the machine, so the comparisons that matter (pipeline vs raw ceiling, vs the River pipeline, "
    "2 workers vs 1) are ratios measured within one run.\n\n"
    + "".join(f"## {s}\n\n" for s in SECTIONS[:-1])
    + f"## Quality\n\n{QUALITY_POINTER}\n"
)


# ----------------------------------------------------------------------------- machine


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return f"{sha}{' + uncommitted changes' if dirty else ''}"
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def ram_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return float("nan")


def machine() -> dict[str, Any]:
    import numpy as np

    info: dict[str, Any] = {
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(),
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "ram_gib": round(ram_gib(), 1),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return info


def command_line() -> str:
    """The exact command that ran this benchmark (module form when run with -m)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    exe = os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(str(ROOT)) else sys.executable
    head = [exe, "-m", spec.name] if spec is not None and spec.name else [exe, sys.argv[0]]
    return shlex.join([*head, *sys.argv[1:]])


def machine_line(info: dict[str, Any]) -> str:
    gpu = f", GPU {info['cuda']}" if info.get("cuda") else ", no GPU"
    return (f"{info['date_utc']}, commit `{info['commit']}`, {info['nproc']} CPUs ({info['cpu']}), "
            f"{info['ram_gib']} GiB RAM{gpu}, load average {info['loadavg'][0]} at start, "
            f"Python {info['python']}, torch {info.get('torch', '-')} ({info.get('torch_threads', '-')} thread)")


# ----------------------------------------------------------------------------- tables


def fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:  # NaN
            return "–"
        if digits == 0 and abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:,.{max(digits, 2 if abs(value) < 100 else 0)}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[fmt(c) for c in row] for row in rows]
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(out)


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [list(headers)] + [[fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    print(f"\n{title}")
    for j, row in enumerate(cells):
        print("  ".join(c.rjust(w) if j and i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))))
        if j == 0:
            print("  ".join("-" * w for w in widths))
    sys.stdout.flush()


def verdict(met: bool | None) -> str:
    return "–" if met is None else ("**met**" if met else "**not met**")


# ----------------------------------------------------------------------------- results


@dataclass
class Report:
    """One benchmark's output: JSON numbers plus one markdown block for its BENCHMARKS.md section."""

    name: str
    section: str
    title: str
    info: dict[str, Any] = field(default_factory=machine)
    command: str = field(default_factory=command_line)
    data: dict[str, Any] = field(default_factory=dict)
    parts: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        self.parts.append(text.strip("\n"))

    def table(self, title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]], note: str = "") -> None:
        print_table(title, headers, rows)
        self.add(f"**{title}**" + (f" {note}" if note else "") + "\n\n" + markdown_table(headers, rows))

    def markdown(self) -> str:
        head = (f"### {self.title}\n\n{machine_line(self.info)}.\n\n"
                f"Command: `{self.command}`\n")
        return head + "\n" + "\n\n".join(self.parts) + "\n"

    def save(self, update_md: bool = True) -> Path:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{self.name}.json"
        payload = {"name": self.name, "machine": self.info, "command": self.command, **self.data}
        path.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
        md = self.markdown()
        (RESULTS / f"{self.name}.md").write_text(md)
        if update_md:
            update_benchmarks_md(self.section, self.name, md)
        print(f"\nwrote {path.relative_to(ROOT)} and bench/results/{self.name}.md"
              + (f"; updated BENCHMARKS.md ({self.section})" if update_md else ""))
        return path


def _json_default(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:
        pass
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def write_result(path: str | Path, result: dict[str, Any]) -> None:
    """Write a benchmark's result as indented JSON to `path` and print it."""
    text = json.dumps(result, indent=2)
    Path(path).write_text(text + "\n")
    print(text)


def update_benchmarks_md(section: str, name: str, block: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace (or add) the block `name` inside `## section`, keeping everything else as it is."""
    text = path.read_text() if path.exists() else SKELETON
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    wrapped = f"{start}\n{block.rstrip()}\n{end}"
    if start in text and end in text:
        pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
        text = pattern.sub(lambda _: wrapped, text, count=1)
    else:
        heading = f"## {section}\n"
        if heading not in text:
            text = text.rstrip("\n") + f"\n\n{heading}\n"
        at = text.index(heading) + len(heading)
        nxt = text.find("\n## ", at)
        insert_at = len(text) if nxt < 0 else nxt + 1
        before = text[:insert_at].rstrip("\n")
        text = before + "\n\n" + wrapped + "\n\n" + text[insert_at:].lstrip("\n")
    path.write_text(text if text.endswith("\n") else text + "\n")


# ----------------------------------------------------------------------------- timing


@contextmanager
def stopwatch() -> Iterator[Callable[[], float]]:
    """`with stopwatch() as elapsed: ...; elapsed()` -> seconds (frozen at exit)."""
    start = time.perf_counter()
    end: list[float] = []
    yield lambda: (end[0] if end else time.perf_counter()) - start
    end.append(time.perf_counter())


def best_of(fn: Callable[[], Any], repeats: int, min_time_s: float = 0.0) -> float:
    """Smallest wall time of `repeats` calls (at least one; keeps going until min_time_s is spent)."""
    best, spent, n = float("inf"), 0.0, 0
    while n < repeats or spent < min_time_s:
        t0 = time.perf_counter()
        fn()
        took = time.perf_counter() - t0
        best, spent, n = min(best, took), spent + took, n + 1
        if n >= max(repeats, 1) * 20:
            break
    return best


def rss_bytes() -> int:
    """Resident set size of this process, from /proc (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def percentile(values: Sequence[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else float("nan")
