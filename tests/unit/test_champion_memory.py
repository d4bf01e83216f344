"""The champion board's memory of scored events: labels rate them, the label delay rates the rest as genuine."""

from __future__ import annotations

import numpy as np

from stream_models.engine.champion import ChampionBoard, Contender, Scored


class Stateless:
    """A detector or threshold with nothing to save (the board's memory is under test)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def board(memory: int = 100, window: int = 100) -> ChampionBoard:
    contenders = [Contender(name, Stateless(), "rows", Stateless()) for name in ("a", "b")]
    return ChampionBoard(contenders, "a", memory=memory, window=window)


def scored(a: list[float], b: list[float], threshold: float = 0.5) -> dict[str, Scored]:
    return {name: Scored(np.array(s), np.array(s) >= threshold, np.full(len(s), threshold))
            for name, s in (("a", a), ("b", b))}


def rows(b: ChampionBoard) -> dict[str, dict]:
    return {row["detector"]: row for row in b.leaderboard()}


def test_labels_rate_their_events_and_the_label_delay_rates_the_rest_as_genuine() -> None:
    b = board()
    b.remember(["e1", "e2", "e3"], np.array([0.0, 1.0, 2.0]), scored([0.9, 0.1, 0.2], [0.3, 0.8, 0.1]))
    b.remember(["e4"], np.array([50.0]), scored([0.7], [0.2]))
    assert b.observe_labels(["e1", "unknown"], [1, 1]) == 1
    b.expire(now_ts=10.0, label_delay_s=5.0)  # e2 and e3 are past the delay, e4 is not
    board_rows = rows(b)
    assert board_rows["a"]["labelled"] == 3 and board_rows["a"]["positives"] == 1
    assert board_rows["a"]["alerts"] == 1 and board_rows["a"]["precision"] == 1.0  # a flagged e1 only
    assert board_rows["b"]["alerts"] == 1 and board_rows["b"]["precision"] == 0.0  # b flagged e2, a genuine one
    assert b.observe_labels(["e2", "e4"], [1, 1]) == 1  # e2 already counted as genuine; e4 still waits


def test_memory_drops_the_oldest_events_unrated_and_the_window_keeps_the_latest_rated() -> None:
    b = board(memory=3, window=2)
    b.remember([f"e{i}" for i in range(5)], np.arange(5.0), scored([0.1] * 5, [0.1] * 5))
    assert b.observe_labels(["e0", "e1"], [1, 1]) == 0  # beyond the memory
    assert b.observe_labels(["e2", "e3", "e4"], [1, 0, 1]) == 3
    assert rows(b)["a"]["labelled"] == 2 and rows(b)["a"]["positives"] == 1  # the window: e3, e4


def test_an_event_scored_again_is_rated_once_on_its_latest_score() -> None:
    b = board()
    b.remember(["x", "y"], np.array([0.0, 0.0]), scored([0.1, 0.1], [0.1, 0.1]))
    b.remember(["x"], np.array([1.0]), scored([0.9], [0.9]))
    assert b.observe_labels(["x"], [1]) == 1
    b.expire(now_ts=100.0, label_delay_s=1.0)
    board_rows = rows(b)
    assert board_rows["a"]["labelled"] == 2 and board_rows["a"]["alerts"] == 1 and board_rows["a"]["recall"] == 1.0


def test_a_restored_board_holds_the_same_events_and_ratings() -> None:
    b = board()
    b.remember(["e1", "e2"], np.array([0.0, 1.0]), scored([0.9, 0.1], [0.2, 0.6]))
    b.remember(["e3"], np.array([2.0]), scored([0.4], [0.4]))
    b.observe_labels(["e2"], [0])
    restored = board()
    restored.load_state_dict(b.state_dict())
    assert restored.leaderboard() == b.leaderboard()
    for each in (b, restored):
        assert each.observe_labels(["e1", "e2", "e3"], [1, 1, 0]) == 2
    assert restored.leaderboard() == b.leaderboard()
