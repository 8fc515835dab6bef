"""The ring tracker's formal proofs pass, and each one can fail: mutants of the tracker must be
caught, by a specification property (the proof lemmas are switched off for the mutants)."""

import pytest
from amaranth.hdl import Mux

from kvpath.hdl.ring import formal
from kvpath.hdl.ring.tracker import RingTracker


class WrapToZero(RingTracker):
    """The window ring wraps onto the sinks."""

    def _next_window_slot(self, slot, at_last, n_sink):
        return Mux(at_last, 0, slot + 1)


class WindowTooBig(RingTracker):
    """Evicts one token late."""

    def _window_full(self, win_len, n_window):
        return win_len == n_window + 1

    def _fills_window(self, win_len, last_win):
        return win_len == last_win + 1


class StuckSlot(RingTracker):
    """Never advances the write slot."""

    def _next_window_slot(self, slot, at_last, n_sink):
        return slot


class ReadSkipsTransition(RingTracker):
    """Misses the step from the last sink to the oldest window token when reading."""

    def _read_next(self, cur, idx, n_sink_valid, lo_slot, win_lo, n_sink, last_slot):
        return super()._read_next(cur, idx, n_sink_valid + 1, lo_slot, win_lo, n_sink, last_slot)


class LaxConfig(RingTracker):
    """Accepts a zero-token window."""

    def _config_ok(self, cap, n_sink, n_window):
        return (n_sink + n_window <= cap) & (cap <= self.max_tokens)


def test_all_proofs_pass(tmp_path, capsys):
    ok = formal.run_all(tmp_path)
    out = capsys.readouterr().out
    print(out)
    assert ok, out
    lines = [ln for ln in out.splitlines() if ln.startswith(("PASS", "FAIL", "UNKNOWN"))]
    per_prop = len(formal.PROPERTIES) + len(formal.LEMMAS)
    assert len(lines) == len(formal.DEFAULT_CONFIGS) * (per_prop + 1)
    assert all(ln.startswith("PASS") for ln in lines)


def test_bmc_depth_covers_fill_wrap_and_read():
    for cfg in formal.DEFAULT_CONFIGS + formal.LONG_CONFIGS:
        if cfg.mode == "bmc":
            assert cfg.depth >= 2 * cfg.max_tokens + 2


@pytest.mark.parametrize("mutant, expected", [
    (WrapToZero, {"sinks_kept", "write_slot_free"}),
    (WindowTooBig, {"capacity", "window_exact"}),
    (StuckSlot, {"write_slot_free"}),
    (ReadSkipsTransition, {"read_order"}),
    (LaxConfig, {"handshake"}),
])
def test_mutant_is_caught(tmp_path, mutant, expected):
    cfg = formal.FormalConfig("bmc", max_tokens=3, pos_bits=3, depth=8)
    res = formal.run_config(cfg, tmp_path, tracker_cls=mutant, lemmas=False)
    assert not res.passed, f"{mutant.__name__} passed every proof"
    assert res.failed_properties & expected, (
        f"{mutant.__name__}: failed {sorted(res.failed_properties)}, expected one of {sorted(expected)}"
        f"\n{res.log[-3000:]}")


@pytest.mark.long
def test_long_proofs(tmp_path):
    assert formal.run_all(tmp_path, configs=formal.LONG_CONFIGS)


@pytest.mark.parametrize("mutant", [WindowTooBig, ReadSkipsTransition])
def test_induction_run_catches_mutants(tmp_path, mutant):
    """The default k-induction run is not vacuous either."""
    cfg = next(c for c in formal.DEFAULT_CONFIGS if c.mode == "prove")
    res = formal.run_config(cfg, tmp_path, tracker_cls=mutant)
    assert not res.passed and res.failed_properties, f"{mutant.__name__} passed the induction run"
