"""Alert record and deterministic alert ids."""

import json

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sinks.alert import Alert, check_alert, make_alert_id, new_alert


def _alert(**kw: object) -> Alert:
    base = dict(
        event_id="e1",
        entity="card-1",
        domain="transactions",
        score=0.9,
        threshold=0.5,
        detector="ae",
        model_version="v1",
        event_ts=1_700_000_000.25,
        top_features=[("amount", 3.5), ("hour", -1.25)],
        alert_ts=1_700_000_001.0,
    )
    base.update(kw)
    return new_alert(**base)  # type: ignore[arg-type]


def test_alert_id_is_deterministic_and_depends_on_all_three_parts() -> None:
    a = make_alert_id("e1", "autoencoder", "v1")
    assert a == make_alert_id("e1", "autoencoder", "v1")
    assert (
        len(
            {
                a,
                make_alert_id("e2", "autoencoder", "v1"),
                make_alert_id("e1", "lstm", "v1"),
                make_alert_id("e1", "autoencoder", "v2"),
            }
        )
        == 4
    )


@given(st.text(), st.text(), st.text(), st.text())
def test_alert_id_parts_cannot_be_shifted_into_each_other(a: str, b: str, c: str, d: str) -> None:
    if (a, b) != (c, d):
        assert make_alert_id(a, b, "v") != make_alert_id(c, d, "v")


def test_redelivered_event_gets_same_alert_even_at_another_time() -> None:
    first, second = _alert(alert_ts=1.0), _alert(alert_ts=2.0)
    assert first.alert_id == second.alert_id


def test_json_round_trip_keeps_every_field_and_feature_pairs() -> None:
    alert = _alert(label=1, links={"dashboard": "https://example/x"})
    data = alert.to_json()
    decoded = Alert.from_json(data)
    assert decoded == alert
    assert decoded.top_features == [("amount", 3.5), ("hour", -1.25)]
    doc = json.loads(data)
    assert doc["entity"] == "card-1" and doc["top_features"] == [["amount", 3.5], ["hour", -1.25]]


def test_optional_fields_are_omitted_when_unset() -> None:
    doc = json.loads(_alert().to_json())
    assert "label" not in doc and "links" not in doc
    assert set(doc) >= {
        "alert_id",
        "event_id",
        "entity",
        "domain",
        "score",
        "threshold",
        "model_version",
        "event_ts",
        "alert_ts",
    }


def test_malformed_payload_is_rejected() -> None:
    with pytest.raises(msgspec.ValidationError):
        Alert.from_json(b'{"alert_id": "x"}')
    with pytest.raises(msgspec.DecodeError):
        Alert.from_json(b"not json")


@pytest.mark.parametrize("field", ["score", "event_ts"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_score_or_time_is_refused(field: str, bad: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        check_alert(_alert(**{field: bad}))
