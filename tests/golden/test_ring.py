"""The golden ring model on hand-worked examples (the same ones docs/ring.md walks through)."""

import pytest

from kvpath.golden.ring import (GENERATED_MAX_TOKENS, Evicted, RingConfigError, RingFullError,
                                RingModel)


def _positions(ring):
    return [e.pos for e in ring.read_order()]


def test_streaming_example_from_docs():
    # C=8 slots, S=2 sinks, W=4 window: slots 2..7 form the ring, so eviction leaves stale slots.
    r = RingModel(8, 2, 4, max_tokens=16)
    results = [r.append(f"t{p}") for p in range(12)]
    assert [x.slot for x in results] == [0, 1, 2, 3, 4, 5, 6, 7, 2, 3, 4, 5]
    assert [x.evicted for x in results[:6]] == [None] * 6
    assert [x.evicted for x in results[6:]] == [Evicted(2, 2), Evicted(3, 3), Evicted(4, 4),
                                                Evicted(5, 5), Evicted(6, 6), Evicted(7, 7)]
    order = r.read_order()
    assert [(e.slot, e.pos, e.cache_pos, e.token) for e in order] == [
        (0, 0, 0, "t0"), (1, 1, 1, "t1"), (2, 8, 2, "t8"), (3, 9, 3, "t9"), (4, 10, 4, "t10"),
        (5, 11, 5, "t11")]
    assert r.valid_slots() == {0: 0, 1: 1, 2: 8, 3: 9, 4: 10, 5: 11}


def test_full_ring_writes_into_the_evicted_slot():
    r = RingModel(5, 1, 4, max_tokens=8)  # W = C - S: no spare slot
    for _ in range(5):
        r.append()
    res = r.append()
    assert (res.slot, res.pos, res.evicted) == (1, 5, Evicted(1, 1))
    assert _positions(r) == [0, 2, 3, 4, 5]


def test_fewer_tokens_than_sinks():
    r = RingModel(6, 4, 2, max_tokens=8)
    for _ in range(3):
        assert r.append().evicted is None
    assert _positions(r) == [0, 1, 2]
    assert r.evict_upto(100) == []  # sinks are never evicted
    assert _positions(r) == [0, 1, 2]


def test_evict_upto_only_touches_the_window_and_only_the_past():
    r = RingModel(10, 2, 6, max_tokens=16)
    for _ in range(9):
        r.append()
    assert _positions(r) == [0, 1, 3, 4, 5, 6, 7, 8]
    gone = r.evict_upto(6)
    assert [e.pos for e in gone] == [3, 4, 5]
    assert _positions(r) == [0, 1, 6, 7, 8]
    r.evict_upto(1000)
    assert _positions(r) == [0, 1]
    # Later tokens are unaffected by the earlier, larger cutoff.
    r.append(), r.append()
    assert _positions(r) == [0, 1, 9, 10]
    assert [e.cache_pos for e in r.read_order()] == [0, 1, 2, 3]


def test_sliding_window_without_sinks():
    r = RingModel(3, 0, 3, max_tokens=4)
    slots = [r.append().slot for _ in range(7)]
    assert slots == [0, 1, 2, 0, 1, 2, 0]
    assert _positions(r) == [4, 5, 6]
    assert [e.slot for e in r.read_order()] == [1, 2, 0]


@pytest.mark.parametrize("cfg, rule", [
    ((8, 4, 5), "S + W must be <= KV_MAX_TOKENS: S=4 + W=5 = 9 > 8"),
    ((8, 2, 0), "window W must be >= 1"),
    ((8, -1, 2), "sinks S must be >= 0"),
    ((40, 4, 8), "KV_MAX_TOKENS=40 exceeds the generated maximum 32"),
])
def test_bad_configurations_are_clear_errors(cfg, rule):
    with pytest.raises(RingConfigError, match=rule.replace("+", r"\+")):
        RingModel(*cfg, max_tokens=32)


def test_failed_reconfigure_changes_nothing():
    r = RingModel(8, 2, 4, max_tokens=16)
    for _ in range(5):
        r.append()
    before = r.read_order()
    with pytest.raises(RingConfigError):
        r.configure(8, 6, 4)
    assert r.read_order() == before and r.config.n_sink == 2
    r.configure(6, 1, 5)
    assert r.n_valid == 0 and r.appended == 0 and r.capacity == 6


def test_default_maximum_is_the_generated_one():
    assert RingModel(GENERATED_MAX_TOKENS, 4, GENERATED_MAX_TOKENS - 4).capacity == GENERATED_MAX_TOKENS
    with pytest.raises(RingConfigError):
        RingModel(GENERATED_MAX_TOKENS + 1, 0, 1)


def test_position_limit():
    r = RingModel(4, 0, 4, pos_limit=3)
    for _ in range(3):
        r.append()
    with pytest.raises(RingFullError):
        r.append()
    assert r.appended == 3
    r.reset()
    assert r.append().pos == 0
