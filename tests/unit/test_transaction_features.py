"""TransactionFeatures: the book's features on hand-checkable streams, batch == one-by-one, delayed
labels, bounded memory, snapshot/restore."""

from __future__ import annotations

import io
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_models.transaction_features import DAY, OUTLIER_Z, TransactionFeatures, TransactionFeaturesConfig


def tx(i: int, ts: float, card: str = "c1", term: str = "t1", amount: float = 10.0) -> SimpleNamespace:
    return SimpleNamespace(event_id=str(i), ts=float(ts), card_id=card, terminal_id=term, amount=float(amount))


def col(f: TransactionFeatures, X: np.ndarray, name: str) -> np.ndarray:
    return X[:, f.feature_names.index(name)]


def test_first_fifteen_features_are_the_books_in_its_order():
    f = TransactionFeatures()
    assert f.feature_names[:3] == ["TX_AMOUNT", "TX_DURING_WEEKEND", "TX_DURING_NIGHT"]
    assert f.book_feature_names[3:9] == [
        "CUSTOMER_ID_NB_TX_1DAY_WINDOW", "CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW",
        "CUSTOMER_ID_NB_TX_7DAY_WINDOW", "CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW",
        "CUSTOMER_ID_NB_TX_30DAY_WINDOW", "CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW"]
    assert f.book_feature_names[9:] == [
        "TERMINAL_ID_NB_TX_1DAY_WINDOW", "TERMINAL_ID_RISK_1DAY_WINDOW",
        "TERMINAL_ID_NB_TX_7DAY_WINDOW", "TERMINAL_ID_RISK_7DAY_WINDOW",
        "TERMINAL_ID_NB_TX_30DAY_WINDOW", "TERMINAL_ID_RISK_30DAY_WINDOW"]
    assert len(set(f.feature_names)) == len(f.feature_names)


def test_card_windows_count_the_current_transaction_and_exclude_exactly_one_window_ago():
    f = TransactionFeatures()
    t0 = 1_700_000_000.0
    _, X = f.update_many([tx(0, t0, amount=10), tx(1, t0 + DAY, amount=30), tx(2, t0 + DAY + 1, amount=50)])
    np.testing.assert_array_equal(col(f, X, "CUSTOMER_ID_NB_TX_1DAY_WINDOW"), [1, 1, 2])  # t0 is out at t0+1d
    np.testing.assert_allclose(col(f, X, "CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW"), [10, 30, 40])
    np.testing.assert_array_equal(col(f, X, "CUSTOMER_ID_NB_TX_7DAY_WINDOW"), [1, 2, 3])
    np.testing.assert_allclose(col(f, X, "CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW"), [10, 20, 30])


def test_weekend_and_night_flags_follow_the_utc_clock():
    f = TransactionFeatures()
    sat_3am = 1_700_881_200.0  # 2023-11-25 03:00 UTC, a Saturday
    mon_noon = sat_3am + 2 * DAY + 9 * 3600  # Monday 12:00
    _, X = f.update_many([tx(0, sat_3am), tx(1, mon_noon, card="c2")])
    np.testing.assert_array_equal(col(f, X, "TX_DURING_WEEKEND"), [1, 0])
    np.testing.assert_array_equal(col(f, X, "TX_DURING_NIGHT"), [1, 0])
    np.testing.assert_array_equal(col(f, X, "WEEKDAY"), [5, 0])


def test_terminal_risk_uses_the_delayed_window_and_only_revealed_labels():
    f = TransactionFeatures()
    t0 = 1_700_000_000.0
    f.update_many([tx(0, t0, card="a"), tx(1, t0 + 60, card="b")])
    f.observe_labels(["0"], [1], t0 + 7 * DAY)  # tx 0 was a fraud, revealed a week later
    probe = t0 + 7 * DAY + 120  # both earlier transactions now lie in the delayed 1-day window
    _, X = f.update_many([tx(2, probe, card="c")])
    assert col(f, X, "TERMINAL_ID_NB_TX_1DAY_WINDOW")[0] == 2
    assert col(f, X, "TERMINAL_ID_RISK_1DAY_WINDOW")[0] == pytest.approx(0.5)
    assert col(f, X, "TERMINAL_FRAUD_RUN_LENGTH")[0] == 0  # tx 1 (genuine, revealed) came after the fraud
    assert col(f, X, "TERMINAL_LAST_LABEL_FRAUD")[0] == 0
    assert col(f, X, "TERMINAL_DAYS_SINCE_REVEALED_FRAUD")[0] == pytest.approx((probe - t0) / DAY)


def test_a_label_counts_only_from_its_reveal_time_on():
    f = TransactionFeatures()
    t0 = 1_700_000_000.0
    f.update_many([tx(0, t0)])
    f.observe_labels(["0"], [1], t0 + 10 * DAY)  # revealed late: 10 days after the transaction
    _, X = f.update_many([tx(1, t0 + 8 * DAY, card="b"), tx(2, t0 + 10 * DAY, card="c")])
    risk = col(f, X, "TERMINAL_ID_RISK_7DAY_WINDOW")
    assert risk[0] == 0.0 and risk[1] == 1.0
    np.testing.assert_array_equal(col(f, X, "TERMINAL_ID_NB_TX_7DAY_WINDOW"), [1, 1])
    np.testing.assert_array_equal(col(f, X, "TERMINAL_FRAUD_RUN_LENGTH"), [0, 1])


def test_no_terminal_feature_sees_a_transaction_younger_than_the_delay():
    f = TransactionFeatures()
    t0 = 1_700_000_000.0
    f.update_many([tx(0, t0)])
    f.observe_labels(["0"], [1], t0)  # even an instant label must not leak through the delayed window
    _, X = f.update_many([tx(1, t0 + 6 * DAY, card="b")])
    assert col(f, X, "TERMINAL_ID_NB_TX_30DAY_WINDOW")[0] == 0
    assert col(f, X, "TERMINAL_ID_RISK_30DAY_WINDOW")[0] == 0


def test_card_profile_features_compare_the_amount_with_earlier_transactions():
    f = TransactionFeatures()
    t0 = 1_700_000_000.0
    _, X = f.update_many([tx(i, t0 + i * 3600, amount=a, term=f"t{i % 2}")
                          for i, a in enumerate([10, 20, 30, 40, 500])])
    last = X[-1]
    names = f.feature_names
    assert last[names.index("CARD_AMOUNT_MEAN_PREV")] == pytest.approx(25)
    assert last[names.index("CARD_AMOUNT_STD_PREV")] == pytest.approx(np.std([10, 20, 30, 40], ddof=1), rel=1e-5)
    assert last[names.index("CARD_AMOUNT_MEDIAN_RATIO")] == pytest.approx(500 / 25)
    assert last[names.index("CARD_AMOUNT_ZSCORE")] > 20
    assert last[names.index("CARD_TERMINAL_VISITS")] == 2  # t0 was used by transactions 0 and 2
    assert np.expm1(last[names.index("CARD_LOG_SECONDS_SINCE_LAST")]) == pytest.approx(3600, rel=1e-4)


def test_sequences_hold_the_cards_last_transactions_padded_with_the_oldest():
    f = TransactionFeatures(TransactionFeaturesConfig(sequence_length=3))
    t0 = 1_700_000_000.0
    _, X = f.update_many([tx(0, t0, amount=1), tx(1, t0 + 1, card="b", amount=2), tx(2, t0 + 2, amount=3)])
    S = f.last_sequences
    assert S.shape == (3, 3, len(f.feature_names))
    np.testing.assert_array_equal(S[0, :, 0], [1, 1, 1])
    np.testing.assert_array_equal(S[2, :, 0], [1, 1, 3])
    np.testing.assert_array_equal(S[2, -1], X[2])


def _stream(rng: np.random.Generator, n: int, n_cards: int, n_terms: int) -> list[SimpleNamespace]:
    ts = 1_700_000_000.0 + np.cumsum(rng.choice([0.0, 0.0, 1.0, 3600.0, DAY], size=n))  # ties on purpose
    return [tx(i, ts[i], f"c{rng.integers(n_cards)}", f"t{rng.integers(n_terms)}", float(rng.integers(1, 300)))
            for i in range(n)]


def _run(events, cuts, labels, config) -> tuple[np.ndarray, np.ndarray]:
    """Feed `events` in the batches given by `cuts`; before each batch reveal the due labels."""
    f = TransactionFeatures(config)
    X, S = [], []
    bounds = [0, *cuts, len(events)]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        if a == b:
            continue
        due = [(i, y, t) for i, y, t in labels if t <= events[b - 1].ts and int(i) < a]
        if due:
            f.observe_labels([d[0] for d in due], [d[1] for d in due], [d[2] for d in due])
        X.append(f.update_many(events[a:b])[1])
        S.append(f.last_sequences)
    return np.concatenate(X), np.concatenate(S)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 120), n_cards=st.integers(1, 6), n_terms=st.integers(1, 4),
       cut_seed=st.integers(0, 10_000))
def test_batches_give_exactly_the_one_by_one_features(seed, n, n_cards, n_terms, cut_seed):
    rng = np.random.default_rng(seed)
    events = _stream(rng, n, n_cards, n_terms)
    labels = [(e.event_id, int(rng.random() < 0.3), e.ts + 2 * DAY) for e in events]
    cfg = TransactionFeaturesConfig(label_delay_days=2, windows_days=(1, 3), initial_capacity=2, sequence_length=3)
    # labels are revealed at the same points in both runs: at the boundaries of the batched run
    cuts = sorted(set(np.random.default_rng(cut_seed).integers(0, n + 1, size=4).tolist()))
    X_batch, S_batch = _run(events, cuts, labels, cfg)
    f = TransactionFeatures(cfg)
    X_one, S_one = [], []
    bounds = [0, *cuts, n]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        due = [(i, y, t) for i, y, t in labels if b > a and t <= events[b - 1].ts and int(i) < a]
        if due:
            f.observe_labels([d[0] for d in due], [d[1] for d in due], [d[2] for d in due])
        for e in events[a:b]:
            X_one.append(f.update_many([e])[1])
            S_one.append(f.last_sequences)
    np.testing.assert_array_equal(X_batch, np.concatenate(X_one))
    np.testing.assert_array_equal(S_batch, np.concatenate(S_one))


def _card_columns_by_definition(events: list[SimpleNamespace], cfg: TransactionFeaturesConfig) -> list[dict]:
    """The card columns written out from their definitions, one event at a time over plain lists."""
    history: dict[str, list[tuple[float, float, str, bool]]] = {}  # card -> (ts, amount, terminal, outlier)
    rows = []
    for e in events:
        past, t, a = history.setdefault(e.card_id, []), e.ts, e.amount
        row = {}
        for d in cfg.windows_days:
            w = [p[1] for p in past if p[0] > t - d * DAY]
            row[f"CUSTOMER_ID_NB_TX_{d}DAY_WINDOW"] = len(w) + 1
            row[f"CUSTOMER_ID_AVG_AMOUNT_{d}DAY_WINDOW"] = (sum(w) + a) / (len(w) + 1)
        window = [p for p in past if p[0] > t - cfg.profile_days * DAY]
        usual = [p[1] for p in window if not p[3]]
        amounts = [p[1] for p in window] if len(window) - len(usual) >= len(usual) else usual
        n = len(amounts)
        mean = statistics.fmean(amounts) if n else a
        std = statistics.stdev(amounts) if n >= 2 else 0.0
        z = (a - mean) / max(std, 0.1 * abs(mean), 1.0) if n >= 2 else 0.0
        since = min(max(t - max(p[0] for p in past), 0.0), cfg.time_cap_days * DAY) if past else cfg.time_cap_days * DAY
        row.update({"CARD_AMOUNT_MEAN_PREV": mean, "CARD_AMOUNT_STD_PREV": std, "CARD_AMOUNT_ZSCORE": z,
                    "CARD_AMOUNT_RATIO": a / max(mean, 1.0) if n else 1.0,
                    "CARD_AMOUNT_MEDIAN_RATIO": a / max(statistics.median(amounts), 1.0) if n else 1.0,
                    "CARD_LOG_SECONDS_SINCE_LAST": math.log1p(since),
                    "CARD_TERMINAL_VISITS": sum(p[2] == e.terminal_id for p in window)})
        past.append((t, a, e.terminal_id, n >= 3 and z >= OUTLIER_Z))
        rows.append(row)
    return rows


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 150), n_cards=st.integers(1, 4), n_terms=st.integers(1, 3))
def test_card_columns_match_their_definitions(seed, n, n_cards, n_terms):
    rng = np.random.default_rng(seed)
    events = _stream(rng, n, n_cards, n_terms)
    for e in events:  # some spending spikes, so the outlier rule and its "new normal" come into play
        e.amount *= 50.0 if rng.random() < 0.15 else 1.0
    cfg = TransactionFeaturesConfig(windows_days=(1, 3), profile_days=2, initial_capacity=2)
    f = TransactionFeatures(cfg)
    X = np.concatenate([f.update_many(events[i : i + 7])[1] for i in range(0, n, 7)])
    for i, want in enumerate(_card_columns_by_definition(events, cfg)):
        for name, value in want.items():
            assert X[i, f.feature_names.index(name)] == pytest.approx(value, rel=1e-5, abs=1e-4), (i, name)


def test_repeated_card_in_one_batch_sees_its_earlier_events():
    f = TransactionFeatures()
    t0 = 1_700_000_000.0
    _, X = f.update_many([tx(i, t0, amount=10 * (i + 1)) for i in range(4)])  # same card, same second
    np.testing.assert_array_equal(col(f, X, "CUSTOMER_ID_NB_TX_1DAY_WINDOW"), [1, 2, 3, 4])
    np.testing.assert_allclose(col(f, X, "CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW"), [10, 15, 20, 25])


def test_ring_capacity_grows_so_long_windows_stay_exact():
    small = TransactionFeatures(TransactionFeaturesConfig(initial_capacity=1))
    t0 = 1_700_000_000.0
    events = [tx(i, t0 + i * 600, amount=i + 1) for i in range(50)]
    X = np.concatenate([small.update_many(events[i:i + 7])[1] for i in range(0, 50, 7)])
    np.testing.assert_array_equal(col(small, X, "CUSTOMER_ID_NB_TX_1DAY_WINDOW"), np.arange(1, 51))
    assert small._cards.capacity >= 50


def test_state_is_bounded_by_the_lru_limit():
    f = TransactionFeatures(TransactionFeaturesConfig(max_cards=4, max_terminals=4))
    t0 = 1_700_000_000.0
    for i in range(30):
        f.update_many([tx(i, t0 + i, card=f"c{i}", term=f"t{i}")])
    assert len(f._cards.slot_of) <= 4 and f._cards.n_slots <= 4
    assert len(f._terms.slot_of) <= 4
    assert set(f._cards.slot_of) == {"c26", "c27", "c28", "c29"}  # the most recently seen survive
    _, X = f.update_many([tx(99, t0 + 100, card="c0")])  # an evicted card starts afresh
    assert col(f, X, "CUSTOMER_ID_NB_TX_30DAY_WINDOW")[0] == 1


def test_old_event_ids_are_forgotten_after_the_label_horizon():
    f = TransactionFeatures()
    t0 = 1_700_000_000.0
    for d in range(60):
        f.update_many([tx(d, t0 + d * DAY, card=f"c{d % 3}")])
    assert "0" not in f._event_seq and "59" in f._event_seq
    assert f.observe_labels(["0"], [1], t0 + 60 * DAY) == 0


def test_snapshot_restore_continues_exactly(tmp_path):
    rng = np.random.default_rng(3)
    events = _stream(rng, 200, 5, 3)
    cfg = TransactionFeaturesConfig(label_delay_days=1, initial_capacity=4)
    full = TransactionFeatures(cfg)
    first = TransactionFeatures(cfg)
    X_full = [full.update_many(events[:100])[1]]
    first.update_many(events[:100])
    buf = io.BytesIO()
    torch.save(first.snapshot(), buf)
    buf.seek(0)
    restored = TransactionFeatures()
    restored.restore(torch.load(buf, weights_only=True))
    labels = ([e.event_id for e in events[:100:3]], [1] * len(events[:100:3]), events[99].ts)
    for f in (full, restored):
        f.observe_labels(*labels)
    X_full.append(full.update_many(events[100:])[1])
    np.testing.assert_array_equal(restored.update_many(events[100:])[1], X_full[1])
    np.testing.assert_array_equal(restored.last_sequences, full.last_sequences)


def test_partition_snapshot_moves_only_the_given_cards():
    t0 = 1_700_000_000.0
    a = TransactionFeatures()
    a.update_many([tx(0, t0, card="p0"), tx(1, t0 + 1, card="p1"), tx(2, t0 + 2, card="p0")])
    part = a.snapshot(card_ids=["p0"])
    assert part["cards"]["keys"] == ["p0"]
    b = TransactionFeatures()
    b.update_many([tx(10, t0 + 3, card="q")])
    b.restore(part, merge_cards=True)
    _, X = b.update_many([tx(3, t0 + 4, card="p0"), tx(4, t0 + 5, card="p1"), tx(5, t0 + 6, card="q")])
    np.testing.assert_array_equal(col(b, X, "CUSTOMER_ID_NB_TX_1DAY_WINDOW"), [3, 1, 2])
    a.drop_cards(["p0"])
    _, X = a.update_many([tx(6, t0 + 7, card="p0")])
    assert col(a, X, "CUSTOMER_ID_NB_TX_1DAY_WINDOW")[0] == 1


def test_cards_of_kafka_partitions_can_be_moved_between_workers():
    from stream_models.entity_store import partition_of

    t0 = 1_700_000_000.0
    cards = [f"card-{i}" for i in range(40)]
    a = TransactionFeatures()
    a.update_many([tx(i, t0 + i, card=c) for i, c in enumerate(cards)])
    mine = a.card_ids(partitions=[1], n_partitions=3)
    assert mine and set(mine) == {c for c in cards if partition_of(c, 3) == 1}
    b = TransactionFeatures()
    b.restore(a.snapshot(card_ids=mine), merge_cards=True)
    a.drop_cards(mine)
    assert set(b.card_ids()) == set(mine) and not set(a.card_ids()) & set(mine)
    with pytest.raises(ValueError):
        a.card_ids(partitions=[0])


def test_terminal_identity_survives_a_restore_in_another_process():
    """Terminal ids are hashed stably (the built-in hash() is salted per process)."""
    code = "from stream_models.transaction_features import _hash_ids; print(int(_hash_ids(['terminal-42'])[0]))"
    root = Path(__file__).resolve().parents[2]
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root,
                              env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert len(outputs) == 1


def test_config_rejects_nonsense():
    with pytest.raises(ValueError):
        TransactionFeaturesConfig(windows_days=())
    with pytest.raises(ValueError):
        TransactionFeaturesConfig(max_cards=1)


def test_a_late_event_of_a_card_gets_finite_features_with_zero_seconds_since_the_last():
    f = TransactionFeatures()
    t0 = 1_700_000_000.0
    f.update_many([tx(0, t0 + 3_600)])
    _, X = f.update_many([tx(1, t0)])  # arrives after an event an hour younger than itself
    assert np.isfinite(X).all()
    assert col(f, X, "CARD_LOG_SECONDS_SINCE_LAST")[0] == 0.0


def test_a_checkpoint_holding_t_sequence_rows_per_card_restores_the_same_sequences():
    """Checkpoints written before the store kept T-1 rows per card (the current event completes the window)."""
    rng = np.random.default_rng(5)
    events = _stream(rng, 150, 6, 3)
    cfg = TransactionFeaturesConfig(label_delay_days=1, sequence_length=4)
    full, first = TransactionFeatures(cfg), TransactionFeatures(cfg)
    full.update_many(events[:100])
    first.update_many(events[:100])
    state = first.snapshot()
    rows = state["seq"]
    assert rows.shape[1] == 3, "T-1 rows per card are stored"
    state["seq"] = torch.cat([rows[:, :1], rows], dim=1)  # the old layout: T rows, the oldest first
    restored = TransactionFeatures()
    restored.restore(state)
    full.update_many(events[100:])
    restored.update_many(events[100:])
    np.testing.assert_array_equal(restored.last_sequences, full.last_sequences)


def _card_history(amounts: list[float], t0: float = 1_700_000_000.0) -> list[SimpleNamespace]:
    return [tx(i, t0 + i * 3600.0, amount=a) for i, a in enumerate(amounts)]


def test_an_outlying_amount_stays_out_of_its_cards_statistics():
    """A takeover's first large amount must not make the next ones look usual."""
    usual = [27.0, 31.0, 25.0, 29.0, 26.0, 30.0]
    f = TransactionFeatures()
    X = f.update_many(_card_history([*usual, 300.0, 280.0]))[1]
    mean, z = col(f, X, "CARD_AMOUNT_MEAN_PREV"), col(f, X, "CARD_AMOUNT_ZSCORE")
    assert mean[7] == pytest.approx(np.mean(usual)), "the 300.00 before it is left out"
    assert z[7] > 50, "the second large amount stands out as much as the first"
    assert col(f, X, "CARD_AMOUNT_MEDIAN_RATIO")[7] > 9


def test_a_new_normal_counts_again_once_it_is_the_majority():
    f = TransactionFeatures()
    usual, higher = [27.0, 31.0, 25.0, 29.0], [300.0, 310.0, 290.0, 305.0, 295.0, 300.0]
    X = f.update_many(_card_history([*usual, *higher, 302.0]))[1]
    z = col(f, X, "CARD_AMOUNT_ZSCORE")
    assert (z[4:8] > 50).all(), "the first higher amounts stand out"
    assert (z[-3:] < 4).all(), "once they outnumber the usual ones, amounts of ~300 are the card's normal"
    assert col(f, X, "CARD_TERMINAL_VISITS")[-1] == len(usual) + len(higher), "visits count every transaction"


def test_a_checkpoint_without_outlier_marks_restores():
    f = TransactionFeatures()
    f.update_many(_card_history([27.0, 31.0, 25.0, 29.0]))
    state = f.snapshot()
    del state["cards"]["data"]["outlier"]  # written before amounts were marked
    g = TransactionFeatures()
    g.restore(state)
    nxt = _card_history([30.0], t0=1_700_000_000.0 + 10 * 3600.0)
    np.testing.assert_array_equal(g.update_many(nxt)[1], f.update_many(nxt)[1])
