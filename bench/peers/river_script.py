"""Peer (c): the plain script a user would write: kafka-python, `json.loads`, a River detector per event
(score_one, then learn_one), flagged events XADDed to a Redis stream in one pipeline per poll batch."""

from __future__ import annotations

import json
import time

import redis
from kafka import KafkaConsumer

from bench.peers.common import IDLE_S, Meter, features, peer_args, river_model, score_and_learn


def main() -> None:
    args = peer_args(__doc__)
    consumer = KafkaConsumer(args.topic, bootstrap_servers=args.bootstrap, group_id=args.group,
                             auto_offset_reset="earliest")
    r = redis.Redis.from_url(args.redis_url)
    stream = f"peers:{args.group}:alerts"
    model = river_model()
    meter, last, flags = Meter(args.events), time.monotonic(), 0
    while True:
        batches = consumer.poll(timeout_ms=1000)
        if not batches:
            if time.monotonic() - last > IDLE_S:
                meter.idle = True
                break
            continue
        last, n = time.monotonic(), 0
        pipe = r.pipeline(transaction=False)
        for records in batches.values():
            for record in records:
                event = json.loads(record.value)
                score, flagged = score_and_learn(model, features(event, args.domain))
                if flagged:
                    pipe.xadd(stream, {"event_id": event["event_id"], "score": score})
                n += 1
        flags += len(pipe)
        pipe.execute()
        if meter.add(n):
            break
    consumer.close()
    meter.report(flags=flags, sink=f"redis-py XADD to {stream}, one pipeline per poll batch")


if __name__ == "__main__":
    main()
