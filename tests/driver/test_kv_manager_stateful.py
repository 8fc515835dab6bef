"""Hypothesis state machine: the driver's KV manager against per-layer set algebra.

A small model (two local layers with a sliding window, a global layer, one layer reading another's
KV) under random policies, including overflow=error. For every sequence and KV-owning layer the
reference keeps only (appended, evict floor) and the policy's (C, S, W); it predicts the valid
positions, which appends must be refused, and which reconfigurations must fail.
"""

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, initialize, invariant, rule

from kvpath.driver.kv_budget import token_bytes
from kvpath.driver.kv_policy import LayerPolicy
from kvpath.driver.presets import describe_model
from kvpath.driver.ring_manager import KVManager, KVOverflowError

HW_MAX = 10
MODEL = describe_model("tiny", n_layers=5, kv_heads=1, head_dim=32, global_layers={1, 4},
                       local_window=3, kv_shared_layers=2)  # layer 3 reads 2, layer 4 reads 1
OWNERS = (0, 1, 2)

policies = st.one_of(
    st.builds(LayerPolicy.full, overflow=st.sampled_from(["evict", "error"])),
    st.builds(LayerPolicy.sink_window, n_sink=st.integers(0, 3), window=st.integers(1, 5),
              overflow=st.sampled_from(["evict", "error"])),
)


def ring_of(policy, cap):
    """(C, S, W) or None when the policy does not fit under ``cap``."""
    if policy.kind == "full":
        return cap, 0, cap
    need = policy.n_sink + policy.window
    return (need, policy.n_sink, policy.window) if need <= cap else None


class KVManagerSpec(RuleBasedStateMachine):
    seqs = Bundle("seqs")

    @initialize(target=seqs, cap=st.integers(3, HW_MAX), global_policy=policies,
                local_overflow=st.sampled_from(["evict", "error"]))
    def start(self, cap, global_policy, local_overflow):
        self.policy = {0: LayerPolicy.sliding(3, local_overflow), 1: global_policy,
                       2: LayerPolicy.sliding(3, local_overflow)}
        if ring_of(global_policy, cap) is None:
            cap = HW_MAX
            self.policy[1] = LayerPolicy.full()
        self.m = KVManager(MODEL, kv_max_tokens=cap, ddr_bytes=1 << 20, max_sequences=3,
                           hw_max_tokens=HW_MAX, layer_policies=dict(self.policy))
        self.cap = cap
        self.state = {}
        return self._open()

    def _open(self):
        seq = self.m.add_sequence()
        self.state[seq] = self._fresh()
        return seq

    def _fresh(self):
        return {la: {"n": 0, "floor": 0, "written": {}} for la in OWNERS}

    def _expected(self, seq, la):
        c, s, w = ring_of(self.policy[la], self.cap)
        st_ = self.state[seq][la]
        n = st_["n"]
        return list(range(min(n, s))) + list(range(max(s, st_["floor"], n - w), n))

    def _would_evict(self, seq, la):
        c, s, w = ring_of(self.policy[la], self.cap)
        n = self.state[seq][la]["n"]
        return n >= s and len(self._expected(seq, la)) - min(n, s) == w

    @rule(target=seqs)
    def add(self):
        if len(self.state) < 3:
            return self._open()
        return next(iter(self.state))

    @rule(seq=consumes(seqs))
    def remove(self, seq):
        if seq in self.state and len(self.state) > 1:
            self.m.remove_sequence(seq)
            del self.state[seq]

    @rule(seq=seqs)
    def append(self, seq):
        if seq not in self.state:
            return
        blocked = [la for la in OWNERS
                   if self.policy[la].overflow == "error" and self._would_evict(seq, la)]
        if blocked:
            try:
                self.m.append(seq)
            except KVOverflowError:
                return
            raise AssertionError(f"append should have been refused by layers {blocked}")
        results = self.m.append(seq)
        assert set(results) == set(OWNERS)
        for la, res in results.items():
            st_ = self.state[seq][la]
            before = set(self._expected(seq, la))
            assert res.pos == st_["n"]
            st_["n"] += 1
            gone = before - set(self._expected(seq, la))
            assert gone == ({res.evicted.pos} if res.evicted else set())
            st_["written"][res.slot] = res.pos

    @rule(seq=seqs, data=st.data())
    def evict_upto(self, seq, data):
        if seq not in self.state:
            return
        layers = data.draw(st.sets(st.sampled_from(OWNERS), min_size=1))
        pos = data.draw(st.integers(0, self.m.position(seq) + 2))
        self.m.evict_upto(seq, pos, layers=sorted(layers))
        for la in layers:
            st_ = self.state[seq][la]
            st_["floor"] = max(st_["floor"], min(pos, st_["n"]))

    @rule(seq=seqs)
    def reset(self, seq):
        if seq in self.state:
            self.m.reset(seq)
            self.state[seq] = self._fresh()

    @rule(cap=st.integers(0, HW_MAX + 2))
    def reconfigure(self, cap):
        fits = 1 <= cap <= HW_MAX and all(ring_of(p, cap) for p in self.policy.values())
        try:
            self.m.reconfigure(kv_max_tokens=cap)
        except ValueError:
            assert not fits, f"KV_MAX_TOKENS={cap} was refused"
            return
        assert fits, f"KV_MAX_TOKENS={cap} was accepted"
        self.cap = cap
        for seq in self.state:
            self.state[seq] = self._fresh()

    @invariant()
    def every_layer_reads_what_its_policy_keeps(self):
        if not hasattr(self, "m"):
            return
        tb = token_bytes(MODEL, "q8_0", "q8_0")
        for seq in self.state:
            read_bytes = 0
            for layer in MODEL.layers:
                la = layer.kv_source
                order = self.m.read_order(seq, layer.index)
                assert [e.pos for e in order] == self._expected(seq, la)
                assert [e.cache_pos for e in order] == list(range(len(order)))
                written = self.state[seq][la]["written"]
                assert all(written[e.slot] == e.pos for e in order)
                assert all(e.slot < ring_of(self.policy[la], self.cap)[0] for e in order)
                read_bytes += len(order) * tb
            assert self.m.traffic(seq).read_bytes_per_step == read_bytes
            assert self.m.position(seq) == self.state[seq][0]["n"]


KVManagerSpec.TestCase.settings = settings(max_examples=120, stateful_step_count=50, deadline=None,
                                           derandomize=True, print_blob=True)
TestKVManagerSpec = KVManagerSpec.TestCase
