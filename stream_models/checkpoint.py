"""Atomic, unpickle-safe checkpoints.

A checkpoint is one file holding a nested dict of plain values: tensors, numpy arrays, str,
bytes, int, float, bool, None, lists, tuples and dicts (model and optimizer state, feature
state, thresholds, drift state, model version, config, Kafka offsets...). Files are written to
a temporary file in the target's directory, fsynced, then renamed over the target, so a reader
sees the old checkpoint or the new one, never half of one. Reading uses
`torch.load(weights_only=True)`, which refuses any pickled object that is not plain data: a
crafted file cannot run code. Numpy arrays are stored as tensors and come back as arrays.

>>> import tempfile, os, numpy as np
>>> path = os.path.join(tempfile.mkdtemp(), "ckpt.pt")
>>> save(path, {"offsets": {("transactions", 0): 42}, "mean": np.arange(3.0)})
>>> state = load(path)
>>> state["offsets"], state["mean"]
({('transactions', 0): 42}, array([0., 1., 2.]))
"""

from __future__ import annotations

import fcntl
import io
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from stream_models.errors import CheckpointError

FORMAT = "streamwarden-checkpoint"
FORMAT_VERSION = 1
_NDARRAY = "__streamwarden_ndarray__"
_NDARRAY_STR = "__streamwarden_ndarray_str__"
_STR_LIST = "__streamwarden_str_list__"  # a long list of str as one (n, width) uint8 tensor of UTF-8 bytes
_SCALARS = (str, bytes, int, float, bool, type(None))


def save(path: str | os.PathLike[str], payload: Mapping[str, Any]) -> None:
    """Write `payload` to `path` atomically (temp file in the same directory, fsync, rename)."""
    _write(path, to_bytes(payload))


class BackgroundWriter:
    """Checkpoints written off the caller's thread. At most one write is in flight: `submit`, `submit_forked` and
    `wait` first finish the previous one and re-raise its error.

    `submit` copies the payload's values at once (a consistent snapshot; the caller may go on changing its state)
    and a writer thread serialises and saves it. `submit_forked` forks: the child process builds the payload from
    its copy-on-write view of the caller's memory and saves it, so the caller stalls only for the fork however
    large its state (Redis's BGSAVE does the same). Only where `can_fork()` (Linux, no CUDA context: a forked child
    cannot use it), and nothing else may be changing the state being saved while the fork happens.

    >>> import tempfile, os, numpy as np
    >>> path, values = os.path.join(tempfile.mkdtemp(), "ckpt.pt"), np.arange(3.0)
    >>> writer = BackgroundWriter()
    >>> writer.submit(path, {"mean": values}); values += 10; writer.wait()
    >>> load(path)["mean"]
    array([0., 1., 2.])
    >>> writer.submit_forked(path, lambda: {"mean": values}); values += 10; writer.wait()
    >>> load(path)["mean"]
    array([10., 11., 12.])
    """

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(1, thread_name_prefix="streamwarden-checkpoint")
        self._in_flight: Any = None
        self._child: tuple[int, str] | None = None  # pid and path of a forked writer

    def submit(self, path: str | os.PathLike[str], payload: Mapping[str, Any]) -> None:
        self.wait()
        envelope = _envelope(payload)
        self._in_flight = self._pool.submit(lambda: _write(path, _serialise(envelope)))

    def submit_forked(self, path: str | os.PathLike[str], build: Callable[[], Mapping[str, Any]]) -> None:
        self.wait()
        pid = os.fork()
        if pid == 0:  # the child: save, then leave without running the parent's exit handlers or flushing its buffers
            code = 1
            try:
                # inherited descriptors go at once: the parent's sockets, and its checkpoint lock, which a worker
                # restarted after a kill -9 must find free even while this child still writes
                os.closerange(3, os.sysconf("SC_OPEN_MAX"))
                os.nice(19)  # the parent's scoring and learning come first on the cores
                torch.set_num_threads(1)  # the parent's intra-op threads do not exist here
                save(path, build())
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        self._child = (pid, os.fspath(path))

    def wait(self) -> None:
        if self._in_flight is not None:
            future, self._in_flight = self._in_flight, None
            future.result()
        if self._child is not None:
            (pid, path), self._child = self._child, None
            code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
            if code != 0:
                raise CheckpointError(f"the process writing checkpoint {path} exited with {code} (its error is on "
                                      "stderr)")


def small_pages_for_forks() -> None:
    """numpy arrays allocated from now on use the kernel's 4 KiB pages instead of the 2 MiB huge pages numpy asks
    for: after a forked checkpoint, the worker's first write to a page copies that page, and copying 2 MiB per
    scattered write (feature rings, replay buffers) slowed its batches ~3x for a second after each fork."""
    from numpy._core import multiarray

    setter = getattr(multiarray, "_set_madvise_hugepage", None)  # numpy's switch behind NUMPY_MADVISE_HUGEPAGE
    if setter is not None:
        setter(False)


def can_fork() -> bool:
    """Whether `BackgroundWriter.submit_forked` may be used in this process."""
    # Linux only: on macOS a forked child of a threaded process may crash in system libraries
    return sys.platform.startswith("linux") and not torch.cuda.is_initialized()


def _write(path: str | os.PathLike[str], data: bytes) -> None:
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def claim(path: str | os.PathLike[str], max_workers: int = 1024) -> tuple[Path, IO[str]]:
    """The first file of `path`'s family (`path`, then `<stem>-worker2<suffix>`, ...) no live process holds.

    Each is held with an exclusive lock on `<file>.lock` for as long as the returned lock file stays open
    (the OS releases it when the process dies, even by kill -9), so workers sharing a state directory never
    write one checkpoint, and a restarted worker takes back the lowest free one.
    """
    base = Path(path)
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, max_workers + 1):
        candidate = base if n == 1 else base.with_name(f"{base.stem}-worker{n}{base.suffix}")
        lock = open(candidate.with_name(candidate.name + ".lock"), "a", encoding="utf-8")  # noqa: SIM115
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        return candidate, lock
    raise CheckpointError(f"{max_workers} workers already hold checkpoints like {base} in {base.parent}")


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by `save`; raises CheckpointError if missing, corrupt or unsafe."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {os.fspath(path)!r}: {exc}") from exc
    return from_bytes(data, source=os.fspath(path))


def to_bytes(payload: Mapping[str, Any]) -> bytes:
    """Serialise `payload` the way `save` does (for sending a model over Kafka, say)."""
    return _serialise(_envelope(payload))


def _envelope(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The payload as plain data, every array and tensor copied."""
    if not isinstance(payload, Mapping):
        raise CheckpointError(f"checkpoint payload must be a dict, got {type(payload).__name__}")
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "payload": _encode(payload, "payload")}


def _serialise(envelope: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(envelope, buffer)
    return buffer.getvalue()


def from_bytes(data: bytes, *, source: str = "<bytes>") -> dict[str, Any]:
    """Inverse of `to_bytes`; refuses anything but plain data (never unpickles objects)."""
    try:
        envelope = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... on bad input
        raise CheckpointError(f"refused checkpoint {source}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(envelope, dict) or envelope.get("format") != FORMAT:
        raise CheckpointError(f"{source} is not a {FORMAT} file")
    if envelope.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{source} has format version {envelope.get('format_version')!r}; this build reads {FORMAT_VERSION}"
        )
    return _decode(envelope["payload"])


def _encode(value: Any, where: str) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "US":
            flat = value.astype(str).ravel().tolist()
            return {_NDARRAY_STR: _pack_strings(flat) or flat, "shape": list(value.shape)}
        if value.dtype.kind not in "biufc":
            raise CheckpointError(f"{where}: numpy arrays of dtype {value.dtype} cannot be checkpointed")
        native = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("="))
        return {_NDARRAY: torch.from_numpy(native.copy())}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not _plain_key(key):
                raise CheckpointError(f"{where}: dict key {key!r} must be a str, number or tuple")
            out[key] = _encode(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, list):
        packed = _pack_strings(value)
        if packed is not None:
            return packed
        return [_encode(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, tuple):
        return tuple(_encode(item, f"{where}[{i}]") for i, item in enumerate(value))
    raise CheckpointError(f"{where}: values of type {type(value).__name__} cannot be checkpointed")


def _pack_strings(items: list[Any]) -> dict[str, torch.Tensor] | None:
    """A long list of str (event ids, entity keys) as one uint8 tensor: pickling 100k str objects held the GIL for
    a second and stalled the worker during a background checkpoint. None when the list is short or holds anything
    else (or a str ending in NUL, which fixed-width bytes would drop)."""
    if len(items) < 64 or not all(type(item) is str and not item.endswith("\x00") for item in items):
        return None
    encoded = np.char.encode(np.asarray(items, dtype=str), "utf-8")
    width = encoded.dtype.itemsize
    return {_STR_LIST: torch.from_numpy(encoded.view(np.uint8).reshape(len(items), width).copy())}


def _unpack_strings(raw: torch.Tensor) -> list[str]:
    n, width = raw.shape
    if width == 0:
        return [""] * n
    return np.char.decode(raw.numpy().reshape(n * width).view(f"S{width}"), "utf-8").tolist()


def _plain_key(key: Any) -> bool:
    if isinstance(key, tuple):
        return all(_plain_key(part) for part in key)
    return isinstance(key, _SCALARS)


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if _NDARRAY in value and len(value) == 1:
            return value[_NDARRAY].numpy()
        if _STR_LIST in value and len(value) == 1:
            return _unpack_strings(value[_STR_LIST])
        if _NDARRAY_STR in value:
            return np.asarray(_decode(value[_NDARRAY_STR]), dtype=str).reshape(value["shape"])
        return {key: _decode(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_decode(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_decode(item) for item in value)
    return value


def _fsync_dir(directory: str) -> None:
    """Make the rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
