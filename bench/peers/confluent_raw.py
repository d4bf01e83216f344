"""Peer (b): a bare confluent-kafka `Consumer.consume` loop, no decoding, no processing."""

from __future__ import annotations

from confluent_kafka import Consumer

from bench.peers.common import Meter, peer_args


def main() -> None:
    args = peer_args(__doc__)
    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": args.group,
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([args.topic])
    meter = Meter(args.events)
    meter.drain(lambda: sum(m.error() is None for m in consumer.consume(num_messages=500, timeout=1.0)))
    consumer.close()
    meter.report()


if __name__ == "__main__":
    main()
