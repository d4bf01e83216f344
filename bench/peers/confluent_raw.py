"""Peer (b): a bare confluent-kafka `Consumer.consume` loop, no decoding, no processing."""

from __future__ import annotations

import time

from confluent_kafka import Consumer

from bench.peers.common import IDLE_S, Meter, peer_args


def main() -> None:
    args = peer_args(__doc__)
    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": args.group,
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([args.topic])
    meter, last = Meter(args.events), time.monotonic()
    while True:
        messages = [m for m in consumer.consume(num_messages=500, timeout=1.0) if m.error() is None]
        if messages:
            last = time.monotonic()
            if meter.add(len(messages)):
                break
        elif time.monotonic() - last > IDLE_S:
            meter.idle = True
            break
    consumer.close()
    meter.report()


if __name__ == "__main__":
    main()
