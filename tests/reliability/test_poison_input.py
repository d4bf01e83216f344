"""Malformed messages of every kind, interleaved at full speed with valid events.

The worker stays up, scores the valid events exactly as a run without the noise does, and sends
every reject to `<topic>.dlq` with its reason. 20,000 malformed messages among 20,000 valid ones.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
from collections import Counter
from pathlib import Path

import msgspec
import pytest

from ingest.dlq import MAX_VALUE_BYTES
from tests.reliability import harness as h

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]

VALID, POISON = 20_000, 20_000


def _poison(rng: random.Random, template: dict) -> tuple[bytes, str]:
    """One malformed message value and the reject reason it must get."""
    bad = dict(template, event_id=f"bad-{rng.getrandbits(48):012x}")
    kind = rng.randrange(12)
    if kind == 0:
        return b"\xff\xfe" + rng.randbytes(rng.randrange(1, 200)), "not_utf8"
    if kind == 1:
        return b"{not json at all " + str(rng.random()).encode(), "not_json"
    if kind == 2:
        return json.dumps(dict(bad, memo="x" * 70_000)).encode(), "oversized"
    if kind == 3:
        depth = rng.randrange(40, 400)
        return ('{"v":1,"event_id":"d","x":' + "[" * depth + "]" * depth + "}").encode(), "too_deep"
    if kind == 4:
        return json.dumps(bad).replace(f'"amount": {bad["amount"]}', '"amount": NaN').encode(), "non_finite"
    if kind == 5:
        return json.dumps(bad).replace(f'"ts": {bad["ts"]}', '"ts": Infinity').encode(), "non_finite"
    if kind == 6:
        return json.dumps(dict(bad, amount=str(bad["amount"]))).encode(), "wrong_type"
    if kind == 7:
        return json.dumps(dict(bad, ts=253_402_214_400.0)).encode(), "out_of_range"  # year 9999
    if kind == 8:
        return json.dumps(dict(bad, v=2)).encode(), "unknown_schema_version"
    if kind == 9:
        return json.dumps({k: v for k, v in bad.items() if k != "card_id"}).encode(), "missing_field"
    if kind == 10:
        return json.dumps([bad]).encode(), "not_object"
    return b"", "empty"


def test_poison_messages_go_to_the_dlq_and_valid_events_score_as_without_noise(
        kafka_bootstrap: str, redis_url: str, redis_client, redis_prefix: str, unique_name: str,
        tmp_path: Path) -> None:
    rng = random.Random(11)
    events = h.simulated_transactions(VALID, seed=5)
    clean_items = h.encoded(events)
    noisy_items: list[tuple[bytes | None, bytes]] = []
    expected: list[str] = []
    poison_left = POISON
    for i, (key, value) in enumerate(clean_items):
        if rng.random() < 0.2:  # unknown extra fields are ignored: still the same valid event
            value = value[:-1] + b',"unknown_field":{"nested":[1,2,3]},"x_note":"hi"}'
        noisy_items.append((key, value))
        burst = poison_left if i == len(clean_items) - 1 else min(poison_left, rng.choice((0, 0, 1, 2, 3)))
        for _ in range(burst):
            raw, reason = _poison(rng, msgspec.json.decode(clean_items[rng.randrange(len(clean_items))][1]))
            noisy_items.append((key, raw))
            expected.append(reason)
        poison_left -= burst
    assert len(expected) == POISON

    clean, noisy = f"{unique_name}-clean", f"{unique_name}-noisy"
    h.create_topics(kafka_bootstrap, {clean: 1, noisy: 1, f"{unique_name}-labels": 1})
    h.produce(kafka_bootstrap, clean, clean_items)
    h.produce(kafka_bootstrap, noisy, noisy_items)

    def spec(role: str, topic: str) -> h.WorkerSpec:
        return h.WorkerSpec(kafka_bootstrap, redis_url, topic, f"{unique_name}-labels", f"{unique_name}-{role}",
                            f"{redis_prefix}{role}:", tmp_path, idle_timeout_s=4)

    without, with_noise = h.Worker(spec("clean", clean), "clean"), h.Worker(spec("noisy", noisy), "noisy")
    with h.workers(without, with_noise):
        without.start()
        with_noise.start()
        assert with_noise.wait(150) == 0, with_noise.log_tail()  # stayed up to the end, stopped cleanly
        assert without.wait(150) == 0, without.log_tail()

    noisy_scores = h.last_scores(h.read_scored(with_noise.scored_log))
    clean_scores = h.last_scores(h.read_scored(without.scored_log))
    assert len(clean_scores) == VALID
    assert h.scores_equal(noisy_scores, clean_scores), "valid events scored differently with noise around them"
    assert h.committed_offsets(kafka_bootstrap, with_noise.spec.group)[(noisy, 0)] == len(noisy_items)

    letters = h.dead_letters(kafka_bootstrap, noisy)
    assert Counter(d["reason"] for d in letters) == Counter(expected)
    assert all(d["topic"] == noisy and d["partition"] == 0 for d in letters)
    originals = {o: v for o, (_, v) in enumerate(noisy_items)}
    for d in letters:  # the original bytes, or (oversized ones) their first MAX_VALUE_BYTES, size and digest
        original, kept = originals[d["offset"]], base64.b64decode(d["value_b64"] or "")
        assert kept == original[:MAX_VALUE_BYTES] and d["value_size"] == len(original)
        assert d["value_sha256"] == hashlib.sha256(original).hexdigest()
    assert sorted(h.alert_ids(redis_client, f"{with_noise.spec.redis_prefix}alerts")) == \
        sorted(h.alert_ids(redis_client, f"{without.spec.redis_prefix}alerts"))
    h.record_figures("poison", valid=VALID, malformed=POISON, rejects_in_dlq=len(letters),
                     reasons=dict(Counter(expected)), lost=VALID - len(noisy_scores), worker_restarts=0)
