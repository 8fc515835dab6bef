"""Hypothesis state machine: the golden ring model against the policy written as plain set algebra.

The reference keeps no slots at all: the valid positions are sinks ``[0, min(n, S))`` plus the window
``[max(S, floor, n - W), n)``. Slots are checked by remembering what each append said it wrote: a
valid entry must still sit in the slot it was written to (no valid token ever overwritten).
"""

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from kvpath.golden.ring import RingConfigError, RingModel

MAX = 12


def _valid_config(c, s, w):
    return w >= 1 and s >= 0 and s + w <= c <= MAX


class RingSpec(RuleBasedStateMachine):
    @initialize(c=st.integers(1, MAX), data=st.data())
    def start(self, c, data):
        s = data.draw(st.integers(0, c - 1))
        w = data.draw(st.integers(1, c - s))
        self.ring = RingModel(c, s, w, max_tokens=MAX)
        self._restart(c, s, w)

    def _restart(self, c, s, w):
        self.c, self.s, self.w = c, s, w
        self.n, self.floor = 0, 0
        self.written = {}  # slot -> position the model said it wrote there

    def _expected(self):
        n, s = self.n, self.s
        lo = max(s, self.floor, n - self.w)
        return list(range(min(n, s))) + list(range(lo, n))

    @rule(token=st.integers())
    def append(self, token):
        before = set(self._expected())
        res = self.ring.append(token)
        assert res.pos == self.n
        self.n += 1
        gone = before - set(self._expected())
        assert gone == ({res.evicted.pos} if res.evicted else set())
        if res.evicted:
            assert self.written[res.evicted.slot] == res.evicted.pos
        assert 0 <= res.slot < self.c
        self.written[res.slot] = res.pos

    @rule(data=st.data())
    def evict_upto(self, data):
        pos = data.draw(st.integers(0, self.n + 3))
        before = set(self._expected())
        gone = self.ring.evict_upto(pos)
        self.floor = max(self.floor, min(pos, self.n))
        assert {e.pos for e in gone} == before - set(self._expected())
        assert all(p >= self.s for p in (e.pos for e in gone))

    @rule()
    def reset(self):
        self.ring.reset()
        self._restart(self.c, self.s, self.w)

    @rule(c=st.integers(0, MAX + 2), s=st.integers(-1, MAX), w=st.integers(0, MAX))
    def reconfigure(self, c, s, w):
        if _valid_config(c, s, w):
            self.ring.configure(c, s, w)
            self._restart(c, s, w)
        else:
            before = self.ring.read_order()
            try:
                self.ring.configure(c, s, w)
            except RingConfigError:
                pass
            else:
                raise AssertionError(f"configuration C={c} S={s} W={w} was accepted")
            assert self.ring.read_order() == before

    @invariant()
    def read_order_is_the_policy(self):
        order = self.ring.read_order()
        assert [e.pos for e in order] == self._expected()
        assert [e.cache_pos for e in order] == list(range(len(order)))
        assert len({e.slot for e in order}) == len(order)
        for e in order:
            assert self.written[e.slot] == e.pos, f"slot {e.slot} was overwritten"
        assert self.ring.n_valid == len(order) <= min(self.c, self.s + self.w)
        assert self.ring.valid_slots() == {e.slot: e.pos for e in order}
        assert self.ring.would_evict() == (self.n >= self.s and
                                           len(self._expected()) - min(self.n, self.s) == self.w)


RingSpec.TestCase.settings = settings(max_examples=150, stateful_step_count=60, deadline=None,
                                      derandomize=True, print_blob=True)
TestRingSpec = RingSpec.TestCase
