"""Regression of the RTL ring tracker against the golden ring model, and its cycle costs.

Random command sequences (append, read, evict_upto, clear with good and bad configurations) run
through the tracker inside the bulk stream harness (``kvpath.sim.lib.harness``): cocotb only starts each
pass, so 10^5 operations take seconds. Every response beat is compared, field by field, with what
the golden model says; the final status outputs are compared too.

Each pass replays the stimulus from its start (the harness resets the tracker in between), so the
first passes, on prefixes, measure cycles: one with a run of appends, one with more appends, one
adding full-ring reads. Differences between them give cycles per append and per read element
without fill and drain.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from amaranth.hdl import Module
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from kvpath.golden.ring import RingConfigError, RingFullError, RingModel
from kvpath.hdl.ring.tracker import Op, RingTracker
from kvpath.sim.lib import harness
from kvpath.hdl.generate import write_verilog
from kvpath.sim.lib.runner import run_cocotb

DUT_MODULE = "kvpath_ring_sim"
SIM_MAX_TOKENS = 40  # not a power of two, so configurations above it are representable and refused
SIM_POS_BITS = 32

# The measurement prefix: a full ring of sinks + window, a run of appends, then full-ring reads.
SINKS = 4
APPENDS_A, APPENDS_B, READS = 64, 512, 16


def _padded(fields: dict) -> data.StructLayout:
    # The stimulus memory holds whole bytes; padding keeps the input port as wide as its words.
    # (Only for inputs: Icarus never evaluates an output bit Amaranth drives with a constant.)
    pad = -sum(fields.values()) % 8
    return data.StructLayout({**fields, **({"pad": pad} if pad else {})})


class RingSimTop(wiring.Component):
    """The tracker with its configuration carried on each command and its two response streams
    merged into one, so it fits the one-in one-out stream harness."""

    def __init__(self, max_tokens: int = SIM_MAX_TOKENS, pos_bits: int = SIM_POS_BITS,
                 tracker_cls=RingTracker):
        self.tracker = tracker_cls(max_tokens, pos_bits)
        t = self.tracker
        self.cmd_layout = _padded({
            "op": 2, "pos": pos_bits,
            "kv_max_tokens": t.count_bits, "n_sink": t.count_bits, "n_window": t.count_bits,
        })
        self.resp_layout = data.StructLayout({
            "is_read": 1, "ok": 1, "slot": t.slot_bits, "pos": pos_bits,
            "evict": 1, "evict_slot": t.slot_bits, "evict_pos": pos_bits,
            "cache_pos": t.count_bits, "last": 1, "empty": 1,
        })
        super().__init__({
            "i": In(stream.Signature(self.cmd_layout)),
            "o": Out(stream.Signature(self.resp_layout)),
            "n_valid": Out(t.count_bits),
            "appended": Out(pos_bits),
            "configured": Out(1),
            "cfg_err": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.tracker = t = self.tracker
        i, o = self.i, self.o
        m.d.comb += [
            t.cmd.valid.eq(i.valid),
            i.ready.eq(t.cmd.ready),
            t.cmd.payload.op.eq(i.payload.op),
            t.cmd.payload.pos.eq(i.payload.pos),
            t.kv_max_tokens.eq(i.payload.kv_max_tokens),
            t.n_sink.eq(i.payload.n_sink),
            t.n_window.eq(i.payload.n_window),
            self.n_valid.eq(t.n_valid),
            self.appended.eq(t.appended),
            self.configured.eq(t.configured),
            self.cfg_err.eq(t.cfg_err),
            o.valid.eq(t.wr.valid | t.rd.valid),
            t.rd.ready.eq(o.ready),
            # The tracker never holds both beats at once (a formal property); rd goes first anyway.
            t.wr.ready.eq(o.ready & ~t.rd.valid),
        ]
        with m.If(t.rd.valid):
            m.d.comb += [
                o.payload.is_read.eq(1),
                o.payload.slot.eq(t.rd.payload.slot),
                o.payload.pos.eq(t.rd.payload.pos),
                o.payload.cache_pos.eq(t.rd.payload.cache_pos),
                o.payload.last.eq(t.rd.payload.last),
                o.payload.empty.eq(t.rd.payload.empty),
            ]
        with m.Else():
            m.d.comb += [
                o.payload.ok.eq(t.wr.payload.ok),
                o.payload.slot.eq(t.wr.payload.slot),
                o.payload.pos.eq(t.wr.payload.pos),
                o.payload.evict.eq(t.wr.payload.evict),
                o.payload.evict_slot.eq(t.wr.payload.evict_slot),
                o.payload.evict_pos.eq(t.wr.payload.evict_pos),
            ]
        return m


# -- commands and the golden model's answers ----------------------------------------------------------

@dataclass(frozen=True)
class Cmd:
    op: Op
    pos: int = 0
    cap: int = 0
    sink: int = 0
    window: int = 0


def _beat(**fields) -> dict:
    beat = dict(is_read=0, ok=0, slot=0, pos=0, evict=0, evict_slot=0, evict_pos=0,
                cache_pos=0, last=0, empty=0)
    beat.update(fields)
    return beat


def expected_beats(cmds: list[Cmd], max_tokens: int, pos_bits: int) -> tuple[list[dict], dict]:
    """What the tracker must answer, from the golden model; and its final status outputs.

    The golden model raises on a bad configuration and keeps its state; the tracker cannot raise, so
    it flags ``cfg_err`` and refuses appends (``ok`` = 0) and reads (empty) until the next good
    CLEAR. That difference is modelled here, not in the golden model.
    """
    model: RingModel | None = None
    cfg_err = 0
    beats = []
    for c in cmds:
        if c.op == Op.CLEAR:
            try:
                model = RingModel(c.cap, c.sink, c.window, max_tokens=max_tokens,
                                  pos_limit=2 ** pos_bits - 1)
                cfg_err = 0
            except RingConfigError:
                model, cfg_err = None, 1
        elif c.op == Op.APPEND:
            try:
                r = model.append() if model is not None else None
            except RingFullError:
                r = None
            if r is None:
                beats.append(_beat())
            elif r.evicted is None:
                beats.append(_beat(ok=1, slot=r.slot, pos=r.pos))
            else:
                beats.append(_beat(ok=1, slot=r.slot, pos=r.pos, evict=1,
                                   evict_slot=r.evicted.slot, evict_pos=r.evicted.pos))
        elif c.op == Op.READ:
            entries = model.read_order() if model is not None else []
            if not entries:
                beats.append(_beat(is_read=1, last=1, empty=1))
            for e in entries:
                beats.append(_beat(is_read=1, slot=e.slot, pos=e.pos, cache_pos=e.cache_pos,
                                   last=int(e.cache_pos == len(entries) - 1)))
        elif c.op == Op.EVICT_UPTO:
            if model is not None:
                model.evict_upto(c.pos)
    status = {
        "n_valid": model.n_valid if model else 0,
        "appended": model.appended if model else 0,
        "configured": int(model is not None),
        "cfg_err": cfg_err,
    }
    return beats, status


def _random_config(rng: random.Random, max_tokens: int, port_max: int) -> tuple[int, int, int]:
    if rng.random() < 0.1:  # anything the ports can carry, mostly invalid
        return rng.randint(0, port_max), rng.randint(0, port_max), rng.randint(0, port_max)
    cap = rng.choice([rng.randint(1, max_tokens), max_tokens, rng.randint(1, 6)])
    sink = rng.choice([0, rng.randint(0, min(4, cap - 1)), rng.randint(0, cap - 1)])
    room = cap - sink
    # W = C - S makes the write slot the evicted slot; smaller W leaves stale slots in the ring.
    window = rng.choice([room, rng.randint(1, room), 1])
    return cap, sink, window


def measurement_prefix(max_tokens: int) -> tuple[list[Cmd], list[int]]:
    """Commands of the timing passes and where each pass ends (number of commands)."""
    cmds = [Cmd(Op.CLEAR, cap=max_tokens, sink=SINKS, window=max_tokens - SINKS)]
    cmds += [Cmd(Op.APPEND)] * APPENDS_A
    end_a = len(cmds)
    cmds += [Cmd(Op.APPEND)] * APPENDS_B
    end_b = len(cmds)
    cmds += [Cmd(Op.READ)] * READS
    return cmds, [end_a, end_b, len(cmds)]


def random_commands(n_ops: int, seed: int, max_tokens: int, port_max: int) -> list[Cmd]:
    """``n_ops`` random commands; the last one is a READ, so all commands are taken before the
    harness sees its final beat."""
    rng = random.Random(seed)
    cmds = [Cmd(Op.CLEAR, cap=max_tokens, sink=rng.randint(0, 4), window=max_tokens - 4)]
    appended = 0
    while len(cmds) < n_ops - 1:
        r = rng.random()
        if r < 0.005:
            cap, sink, window = _random_config(rng, max_tokens, port_max)
            cmds.append(Cmd(Op.CLEAR, cap=cap, sink=sink, window=window))
            appended = 0
        elif r < 0.045:
            cmds.append(Cmd(Op.READ))
        elif r < 0.06:
            # Half anywhere in the history, half near the window's edge where the ring wraps.
            lo = 0 if rng.random() < 0.5 else max(0, appended - 50)
            cmds.append(Cmd(Op.EVICT_UPTO, pos=rng.randint(lo, appended + 3)))
        else:
            cmds.append(Cmd(Op.APPEND))
            appended += 1
    cmds.append(Cmd(Op.READ))
    return cmds[:n_ops]


# -- packing ----------------------------------------------------------------------------------------

def _pack(layout: data.StructLayout, values: dict) -> int:
    word = 0
    for name, field in layout:
        v = int(values.get(name, 0))
        if v >> field.width:
            raise ValueError(f"{name}={v} does not fit in {field.width} bits")
        word |= v << field.offset
    return word


def _unpack(layout: data.StructLayout, word: int) -> dict:
    return {name: (word >> f.offset) & ((1 << f.width) - 1) for name, f in layout}


def _rows(words: list[int], nbytes: int) -> np.ndarray:
    return np.frombuffer(b"".join(w.to_bytes(nbytes, "little") for w in words),
                         dtype=np.uint8).reshape(len(words), nbytes)


def _depth(n: int) -> int:
    return 1 << max(4, (n - 1).bit_length())


# -- the run ------------------------------------------------------------------------------------------

def run_ring_sim(simulator: str, ops: int, seed: int, build_dir: Path,
                 max_tokens: int = SIM_MAX_TOKENS, pos_bits: int = SIM_POS_BITS,
                 tracker_cls=RingTracker) -> dict:
    """Run ``ops`` random commands (after the measurement prefix) on ``simulator``; compare every
    response with the golden model. Returns mismatches, cycle costs and timings.
    ``tracker_cls`` lets the tests check that a broken tracker is caught."""
    t_start = time.perf_counter()
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    top = RingSimTop(max_tokens, pos_bits, tracker_cls)
    port_max = 2 ** top.tracker.count_bits - 1

    prefix, ends = measurement_prefix(max_tokens)
    cmds = prefix + random_commands(ops, seed, max_tokens, port_max)
    expected, status = expected_beats(cmds, max_tokens, pos_bits)
    in_bytes, out_bytes = top.cmd_layout.size // 8, (top.resp_layout.size + 7) // 8
    stim = [_pack(top.cmd_layout, {"op": c.op.value, "pos": c.pos, "kv_max_tokens": c.cap,
                                   "n_sink": c.sink, "n_window": c.window}) for c in cmds]
    exp_words = [_pack(top.resp_layout, b) for b in expected]

    # Beats each prefix pass must see: the golden model on the prefix alone.
    prefix_out = [len(expected_beats(cmds[:end], max_tokens, pos_bits)[0]) for end in ends]
    passes = [{"valid_thr": harness.NO_PAUSE, "ready_thr": harness.NO_PAUSE, "n_in": end, "n_out": n}
              for end, n in zip(ends, prefix_out)]
    rng = random.Random(seed ^ 0xB0B)
    passes.append({"valid_thr": rng.choice([160, 200, 240]), "ready_thr": rng.choice([128, 192, 240]),
                   "n_in": len(cmds), "n_out": len(expected)})
    counters = {"n_valid": top.tracker.count_bits, "appended": pos_bits, "configured": 1,
                "cfg_err": 1}

    dut_v = write_verilog(top, DUT_MODULE, build_dir / f"{DUT_MODULE}.v")
    top_v = build_dir / f"{harness.HARNESS_TOP}.v"
    top_v.write_text(harness.harness_verilog(DUT_MODULE, 8 * in_bytes, top.resp_layout.size,
                                             _depth(len(cmds)), _depth(len(expected)), counters))
    harness.write_hex(build_dir / harness.STIM_FILE, _rows(stim, in_bytes))
    plan_file, result_file = build_dir / "ring_plan.json", build_dir / "ring_result.json"
    plan_file.write_text(json.dumps({"seed": seed, "passes": passes, "counters": list(counters)}))
    result_file.unlink(missing_ok=True)
    times = run_cocotb(verilog=[dut_v, top_v], toplevel=harness.HARNESS_TOP,
                       test_module="kvpath.sim.ring.tb_ring", simulator=simulator, build_dir=build_dir,
                       public=False,
                       extra_env={"KVPATH_TB_PLAN": str(plan_file), "KVPATH_TB_RESULT": str(result_file)})
    results = json.loads(result_file.read_text())

    mismatches, details = 0, []
    for k, res in enumerate(results):
        got = harness.read_hex(Path(res["resp_file"]), res["out_got"], out_bytes)
        got_words = [int.from_bytes(row.tobytes(), "little") for row in got]
        want = exp_words[: res["n_out"]]
        missing = res["n_out"] - len(got_words)
        bad = [j for j, (g, w) in enumerate(zip(got_words, want)) if g != w]
        mismatches += len(bad) + missing
        for j in bad[:5]:
            details.append(f"pass {k} beat {j}: got {_unpack(top.resp_layout, got_words[j])} "
                           f"expected {_unpack(top.resp_layout, want[j])}")
        if missing:
            details.append(f"pass {k}: {missing} of {res['n_out']} beats never came")
        if res["in_sent"] != res["n_in"]:
            mismatches += 1
            details.append(f"pass {k}: {res['in_sent']} of {res['n_in']} commands taken")
    final = results[-1]["counters"]
    for name, value in status.items():
        if final.get(name) != value:
            mismatches += 1
            details.append(f"final {name}={final.get(name)} expected {value}")

    cycles = [r["cycles"] for r in results]
    read_elements = prefix_out[2] - prefix_out[1]
    return {
        "simulator": simulator,
        "seed": seed,
        "ops": ops,
        "commands": len(cmds),
        "beats": len(expected),
        "mismatches": mismatches,
        "details": details,
        "cycles_per_append": (cycles[1] - cycles[0]) / APPENDS_B,
        "cycles_per_read_element": (cycles[2] - cycles[1]) / read_elements,
        "random_pass_cycles": cycles[3],
        "build_s": times["build_s"],
        "sim_s": times["run_s"],
        "wall_s": time.perf_counter() - t_start,
    }
