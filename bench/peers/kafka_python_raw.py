"""Peer (a): a bare kafka-python `KafkaConsumer.poll` loop, no decoding, no processing."""

from __future__ import annotations

from kafka import KafkaConsumer

from bench.peers.common import Meter, peer_args


def main() -> None:
    args = peer_args(__doc__)
    consumer = KafkaConsumer(args.topic, bootstrap_servers=args.bootstrap, group_id=args.group,
                             auto_offset_reset="earliest")
    meter = Meter(args.events)
    meter.drain(lambda: sum(len(records) for records in consumer.poll(timeout_ms=1000).values()))
    consumer.close()
    meter.report()


if __name__ == "__main__":
    main()
