"""Peer (a): a bare kafka-python `KafkaConsumer.poll` loop, no decoding, no processing."""

from __future__ import annotations

import time

from kafka import KafkaConsumer

from bench.peers.common import IDLE_S, Meter, peer_args


def main() -> None:
    args = peer_args(__doc__)
    consumer = KafkaConsumer(args.topic, bootstrap_servers=args.bootstrap, group_id=args.group,
                             auto_offset_reset="earliest")
    meter, last = Meter(args.events), time.monotonic()
    while True:
        batches = consumer.poll(timeout_ms=1000)
        n = sum(len(records) for records in batches.values())
        if n:
            last = time.monotonic()
            if meter.add(n):
                break
        elif time.monotonic() - last > IDLE_S:
            meter.idle = True
            break
    consumer.close()
    meter.report()


if __name__ == "__main__":
    main()
