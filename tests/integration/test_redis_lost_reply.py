"""A flush whose script ran in Redis but whose reply never came back is retried without duplicates."""

from __future__ import annotations

import socket
import threading
from urllib.parse import urlsplit

import pytest

from sinks.alert import Alert, make_alert_id
from sinks.connection import RedisConfig
from sinks.errors import SinkUnavailable
from sinks.redis_sink import RedisAlertSink

pytestmark = pytest.mark.redis


class ReplyDroppingProxy:
    """TCP proxy to Redis. When armed, the next reply from Redis is swallowed and the client is cut off."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.armed = threading.Event()
        self.dropped = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, is_reply: bool) -> None:
        try:
            while data := src.recv(65536):
                if is_reply and self.armed.is_set():
                    self.armed.clear()
                    self.dropped.set()
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        for s in self._sockets:
            s.close()


def make_alert(n: int) -> Alert:
    return Alert(
        make_alert_id(f"evt-{n}", "ae", "v1"),
        f"evt-{n}",
        f"card-{n}",
        "transactions",
        2.0,
        1.0,
        "v1",
        float(n),
        0.0,
    )


@pytest.mark.parametrize("client_retries", [0, 1])
def test_lost_reply_then_retry_writes_each_alert_once(
    redis_url: str, redis_prefix: str, redis_client, client_retries: int
) -> None:  # type: ignore[no-untyped-def]
    parts = urlsplit(redis_url)
    proxy = ReplyDroppingProxy(parts.hostname or "127.0.0.1", parts.port or 6379)
    proxied = f"redis://127.0.0.1:{proxy.port}{parts.path}"
    sink = RedisAlertSink(
        connection=RedisConfig(url=proxied, socket_timeout_s=2.0, retries=client_retries), prefix=redis_prefix
    )
    try:
        sink.add(make_alert(i) for i in range(5))
        assert sink.flush() == 5  # loads the script, so the next call is the EVALSHA that does the work
        second = [make_alert(i) for i in range(5, 15)]
        sink.add(second)
        proxy.armed.set()
        if client_retries == 0:
            with pytest.raises(SinkUnavailable):
                sink.flush()
            assert sink.pending == 10  # not acknowledged, so still ours to deliver
            sink.flush()
        else:
            sink.flush()  # redis-py's own retry repeats the script
        assert proxy.dropped.is_set() and sink.pending == 0
        assert sink.stats["written"] + sink.stats["duplicates"] == 15
    finally:
        sink.close()
        proxy.close()
    stored = [fields[b"alert_id"].decode() for _, fields in redis_client.xrange(f"{redis_prefix}alerts")]
    assert stored == [make_alert(i).alert_id for i in range(15)]
