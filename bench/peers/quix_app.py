"""Peer (d): a Quix Streams app: Application, a StreamingDataFrame whose `.apply` runs the same River
detector per event, flagged events written by quixstreams' own RedisSink (a SET per event, at each checkpoint)."""

from __future__ import annotations

import tempfile
from urllib.parse import urlsplit

from quixstreams import Application
from quixstreams.sinks.community.redis import RedisSink

from bench.peers.common import Meter, features, peer_args, river_model, score_and_learn


def main() -> None:
    args = peer_args(__doc__)
    app = Application(broker_address=args.bootstrap, consumer_group=args.group, auto_offset_reset="earliest",
                      state_dir=tempfile.mkdtemp(prefix="peers-quix-"))
    model, meter = river_model(), Meter(args.events)

    def detect(event: dict) -> dict:
        score, flagged = score_and_learn(model, features(event, args.domain))
        if meter.add(1):
            app.stop()
        return {"event_id": event["event_id"], "score": score, "flagged": flagged}

    url = urlsplit(args.redis_url)
    sink = RedisSink(host=url.hostname or "127.0.0.1", port=url.port or 6379, db=int(url.path.strip("/") or 0),
                     key_serializer=lambda _key, value: f"peers:{args.group}:{value['event_id']}")
    sdf = app.dataframe(app.topic(args.topic, value_deserializer="json"))
    sdf = sdf.apply(detect).filter(lambda row: row["flagged"])
    sdf.sink(sink)
    app.run()
    meter.report(sink="quixstreams.sinks.community.redis.RedisSink (SET per flagged event, flushed per checkpoint)")


if __name__ == "__main__":
    main()
