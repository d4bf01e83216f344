"""Declared event attributes become features: hashed categoricals, numbers, and per-card aggregates of either."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace as Tx

import numpy as np
import pandas as pd
import pytest

from ingest.decode import RejectReason, decode_batch
from ingest.records import Record
from ingest.replay import FileSource
from pipeline.domains import build_processor
from pipeline.errors import ConfigError
from pipeline.settings import load_settings
from stream_models.transaction_features import AttributeSpec, TransactionFeatures, TransactionFeaturesConfig

COUNTRY = {"name": "country", "buckets": 4, "per_card_days": (30,)}
BASKET = {"name": "basket", "kind": "numeric", "per_card_days": (30,)}


def tx(i: int, **attributes: object) -> Tx:
    return Tx(event_id=str(i), ts=1.7e9 + 3600 * i, card_id="c", terminal_id="t", amount=10.0 + i,
              attributes=attributes, channel="ecom" if i % 2 else "pos")


def column(f: TransactionFeatures, X: np.ndarray, name: str) -> list[float]:
    return X[:, f.feature_names.index(name)].tolist()


def test_a_new_country_for_the_card_shows_as_zero_earlier_transactions_there() -> None:
    f = TransactionFeatures(TransactionFeaturesConfig(attributes=(COUNTRY,)))
    _, X = f.update_many([tx(i, country="FR" if i < 4 else "US") for i in range(6)])
    assert column(f, X, "CARD_SAME_COUNTRY_NB_TX_30DAY_WINDOW") == [0, 1, 2, 3, 0, 1]
    assert column(f, X, "CARD_SAME_COUNTRY_AVG_AMOUNT_30DAY_WINDOW")[:5] == [10.0, 10.0, 10.5, 11.0, 14.0]
    onehot = X[:, [f.feature_names.index(f"ATTR_COUNTRY_H{b}") for b in range(4)]]
    assert (onehot.sum(1) == 1).all() and (onehot[0] == onehot[3]).all() and (onehot[0] != onehot[4]).any()


def test_a_numeric_attribute_and_its_zscore_against_the_card() -> None:
    f = TransactionFeatures(TransactionFeaturesConfig(attributes=(BASKET,)))
    _, X = f.update_many([tx(i, basket=2.0 + (i % 2)) for i in range(6)] + [tx(6, basket=40.0), tx(7)])
    assert column(f, X, "ATTR_BASKET")[:2] == [2.0, 3.0] and column(f, X, "ATTR_BASKET")[7] == 0.0  # missing: 0
    z = column(f, X, "CARD_BASKET_ZSCORE_30DAY_WINDOW")
    assert z[0] == 0.0 and z[6] > 10 and z[7] == 0.0


def test_built_in_fields_serve_as_attributes_and_missing_ones_set_no_bucket() -> None:
    f = TransactionFeatures(TransactionFeaturesConfig(attributes=({"name": "channel", "buckets": 8},
                                                                 {"name": "country", "buckets": 8})))
    _, X = f.update_many([tx(i) for i in range(4)])
    channel = X[:, [f.feature_names.index(f"ATTR_CHANNEL_H{b}") for b in range(8)]]
    country = X[:, [f.feature_names.index(f"ATTR_COUNTRY_H{b}") for b in range(8)]]
    assert (channel.sum(1) == 1).all() and (channel[0] == channel[2]).all() and (channel[0] != channel[1]).any()
    assert (country == 0).all()


def test_state_with_attributes_round_trips_and_gives_the_same_features() -> None:
    config = TransactionFeaturesConfig(attributes=(COUNTRY, BASKET))
    a, b = TransactionFeatures(config), TransactionFeatures()
    a.update_many([tx(i, country="FR", basket=1.0 * i) for i in range(5)])
    b.restore(a.snapshot())
    later = [tx(i, country="FR" if i % 2 else "DE", basket=3.0) for i in range(5, 9)]
    np.testing.assert_array_equal(a.update_many(later)[1], b.update_many(later)[1])
    assert b.config.attributes == (AttributeSpec(**COUNTRY), AttributeSpec(**BASKET))


def test_settings_declare_attributes_and_the_engine_features_include_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMWARDEN_TRANSACTIONS__ATTRIBUTES", json.dumps([COUNTRY, BASKET]))
    settings = load_settings(runner={"device": "cpu"})
    engine = build_processor(settings, "transactions")
    names = engine.featurizer.names
    assert "ATTR_COUNTRY_H3" in names and "CARD_BASKET_ZSCORE_30DAY_WINDOW" in names
    with pytest.raises(ConfigError, match="attribute names must be unique"):
        load_settings(transactions={"attributes": [COUNTRY, COUNTRY]})
    with pytest.raises(ConfigError, match="kind"):
        load_settings(transactions={"attributes": [{"name": "x", "kind": "date"}]})


def test_a_file_sends_the_listed_columns_as_attributes(tmp_path: Path) -> None:
    path = tmp_path / "tx.csv"
    pd.DataFrame({"event_id": ["a", "b"], "ts": [1.7e9, 1.7e9 + 1], "card_id": ["c", "c"], "terminal_id": ["t", "t"],
                  "amount": [1.0, 2.0], "country": ["FR", None], "basket": [3, 4]}).to_csv(path, index=False)
    source = FileSource(path, "transactions", columns={"attributes": ["country", "basket"]})
    events = decode_batch(source.poll(10, 0), "transactions", clock=lambda: 1.7e9).events
    assert [e.attributes for e in events] == [{"country": "FR", "basket": 3.0}, {"basket": 4.0}]


def test_bad_attributes_are_rejected_with_a_reason() -> None:
    def record(attributes: object) -> Record:
        body = {"event_id": "e", "ts": 1.7e9, "card_id": "c", "terminal_id": "t", "amount": 1.0,
                "attributes": attributes}
        return Record("tx", 0, 0, 0, b"c", json.dumps(body).encode())

    result = decode_batch([record({"x": [1]}), record("FR"), record({"x": True}), record({"n": 2, "c": "FR"})],
                          "transactions", clock=lambda: 1.7e9)
    assert [(r.reason, r.detail) for r in result.rejects] == [
        (RejectReason.WRONG_TYPE, "attributes['x'] is array, expected a string or a number"),
        (RejectReason.WRONG_TYPE, "attributes is string, expected an object"),
        (RejectReason.WRONG_TYPE, "attributes['x'] is boolean, expected a string or a number")]
    assert result.events[0].attributes == {"n": 2.0, "c": "FR"}
