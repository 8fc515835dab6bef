"""Ring-index validity tracker: which KV slots are valid, where the next token goes, and the read order.

The slot mapping, eviction and read order are exactly those of the golden model
(``kvpath.golden.ring``); docs/ring.md explains them. The state is three counters instead of a
per-slot valid bit, because validity follows from them (sinks ``0..min(appended, S)-1``, window the
``win_len`` slots before ``wr_slot`` in the ring ``S..C-1``), and a 32 K-bit valid map would cost
more flip-flops than the whole datapath. Values derived from the counters (window start slot and
position, valid counts, flags) are cached in registers updated with the counters, which keeps the
longest register-to-register path at 6 LUT levels at 32 K slots instead of 10.

One tracker holds one ring state. All KV heads of a layer append the same token in the same cycle
and evict the same position, so one state serves every head of a layer (and every layer with the
same configuration); per-(layer, head) copies would be identical.

Commands (``cmd`` stream, one per clock when the outputs are drained):

* ``APPEND``: one ``wr`` beat with the slot to write, the token's position and the evicted window
  slot, if any. ``ok`` is 0 (nothing changed) when unconfigured or the position counter is full.
* ``READ``: ``rd`` beats, one per clock, for every valid slot in attention order, ``last`` on the
  final one; an empty ring gives a single beat with ``empty`` and ``last`` set.
* ``EVICT_UPTO``: window tokens with position < ``pos`` become invalid. No response.
* ``CLEAR``: samples ``kv_max_tokens``, ``n_sink``, ``n_window``, empties the ring. A configuration
  breaking ``1 <= W``, ``S + W <= C <= max_tokens`` sets ``cfg_err`` and refuses appends until a
  good one is cleared in. No response.
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from kvpath.config import DEFAULT


class Op(enum.Enum, shape=2):
    APPEND = 0
    READ = 1
    EVICT_UPTO = 2
    CLEAR = 3


def _width(n: int) -> int:
    return max(1, n.bit_length())


class RingTracker(wiring.Component):
    """``max_tokens`` is the generate-time maximum of KV_MAX_TOKENS; positions are ``pos_bits`` wide,
    so a ring accepts ``2**pos_bits - 1`` appends between clears."""

    def __init__(self, max_tokens: int = DEFAULT.kv_max_tokens, pos_bits: int = 32):
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        if pos_bits < 1:
            raise ValueError(f"pos_bits must be >= 1, got {pos_bits}")
        self.max_tokens = max_tokens
        self.pos_bits = pos_bits
        self.slot_bits = _width(max_tokens - 1)
        # Configuration ports and counts must hold max_tokens itself; larger values that still fit
        # the width are refused on CLEAR, never wrapped.
        self.count_bits = _width(max_tokens)
        self.cmd_layout = data.StructLayout({"op": Op, "pos": unsigned(pos_bits)})
        self.append_layout = data.StructLayout({
            "ok": 1,
            "slot": unsigned(self.slot_bits),
            "pos": unsigned(pos_bits),
            "evict": 1,
            "evict_slot": unsigned(self.slot_bits),
            "evict_pos": unsigned(pos_bits),
        })
        self.read_layout = data.StructLayout({
            "slot": unsigned(self.slot_bits),
            "pos": unsigned(pos_bits),
            "cache_pos": unsigned(self.count_bits),
            "last": 1,
            "empty": 1,
        })
        super().__init__({
            "cmd": In(stream.Signature(self.cmd_layout)),
            "wr": Out(stream.Signature(self.append_layout)),
            "rd": Out(stream.Signature(self.read_layout)),
            # Sampled on CLEAR; later driven by the register block.
            "kv_max_tokens": In(self.count_bits),
            "n_sink": In(self.count_bits),
            "n_window": In(self.count_bits),
            "configured": Out(1),
            "cfg_err": Out(1),
            "n_valid": Out(self.count_bits),
            "appended": Out(pos_bits),
            # Read-only views of the state, for callers that plan reads themselves (the KV cache
            # engine turns a READ into at most three contiguous runs instead of one beat per slot).
            "cap": Out(self.count_bits),
            "sinks": Out(self.count_bits),
            "n_sink_valid": Out(self.count_bits),
            "win_len": Out(self.count_bits),
            "lo_slot": Out(self.slot_bits),
            "win_lo": Out(pos_bits),
        })
        # The whole state, created here rather than in elaborate() so the formal checker can state
        # invariants over it (they make each BMC step a local proof instead of a replay of history).
        self.state = SimpleNamespace(
            cap=Signal(self.count_bits, name="cap"),
            n_sink=Signal(self.count_bits, name="n_sink_q"),
            n_window=Signal(self.count_bits, name="n_window_q"),
            ok=Signal(name="ok_view"),  # the ``ok`` register, for the proofs
            # High when every register that caches a derived value equals its formula; the proofs
            # assert it (k-induction starts from an arbitrary state), synthesis removes it.
            caches_agree=Signal(name="caches_agree"),
            count=Signal(pos_bits, name="count"),  # tokens appended since CLEAR = next position
            win_len=Signal(self.count_bits, name="win_len"),  # valid window tokens
            wr_slot=Signal(self.slot_bits, name="wr_slot"),  # slot of the next non-sink token
            reading=Signal(name="reading"),
        )
        self._ok_reg = Signal(name="ok")
        # Values that follow from the state above but would need wide adds, compares and muxes
        # (10 LUT levels at 32 K slots) if recomputed every cycle; each is kept in a register and
        # updated by the same command that changes the state it follows from.
        self._caches = SimpleNamespace(
            win_lo=Signal(pos_bits, name="win_lo_q"),  # count - win_len: oldest window position
            lo_slot=Signal(self.slot_bits, name="lo_slot_q"),  # its slot
            n_sink_valid=Signal(self.count_bits, name="n_sink_valid_q"),  # min(count, n_sink)
            n_valid=Signal(self.count_bits, name="n_valid_q"),  # n_sink_valid + win_len
            window_full=Signal(name="window_full_q"),  # _window_full(win_len, n_window)
            # n_window - 1; n_window resets to 0
            last_win=Signal(self.count_bits, name="last_win_q", init=2 ** self.count_bits - 1),
            # n_valid - 2 while reading: the read iterator's last-but-one entry (n_valid does not
            # change while reading, commands wait)
            read_last=Signal(self.count_bits, name="read_last_q"),
            in_sinks=Signal(name="in_sinks_q"),  # count < n_sink: the next append is a sink
            at_limit=Signal(name="at_limit_q"),  # count == 2**pos_bits - 1: appends are refused
            ring_len=Signal(self.slot_bits + 1, name="ring_len_q"),  # cap - n_sink
            # cap - 1; cap resets to 0
            last_slot=Signal(self.count_bits, name="last_slot_q", init=2 ** self.count_bits - 1),
            # wr_slot - count, one bit wider than a slot so wr_slot - k (0 <= k <= ring_len) is
            # exact as a signed number: EVICT_UPTO finds the new oldest slot with one add.
            slot_minus_count=Signal(self.slot_bits + 1, name="slot_minus_count_q"),
        )

    # Small pieces kept as methods so the formal tests can break exactly one of them (mutants).
    def _next_window_slot(self, slot, at_last, n_sink):
        """The ring step after ``slot``. ``at_last`` compares ``slot`` with the cached ``last_slot``
        (cap - 1): comparing ``slot + 1`` with ``cap`` would chain the increment into the compare."""
        return Mux(at_last, n_sink, slot + 1)

    def _window_full(self, win_len, n_window):
        return win_len == n_window

    def _fills_window(self, win_len, last_win):
        """Whether one more token fills the window: ``_window_full(win_len + 1, n_window)`` against
        the cached ``n_window - 1``, without an increment in front of the compare."""
        return win_len == last_win

    def _read_next(self, cur, idx, n_sink_valid, lo_slot, win_lo, n_sink, last_slot):
        """Slot and position of read entry ``idx``, given entry ``idx - 1`` in ``cur``."""
        in_sinks = idx < n_sink_valid
        at_window = idx == n_sink_valid
        slot = Mux(in_sinks, cur.slot + 1,
                   Mux(at_window, lo_slot,
                       self._next_window_slot(cur.slot, cur.slot == last_slot, n_sink)))
        pos = Mux(at_window, win_lo, cur.pos + 1)
        return slot, pos

    def _config_ok(self, cap, n_sink, n_window):
        return (n_window != 0) & (n_sink + n_window <= cap) & (cap <= self.max_tokens)

    def _lo_slot_formula(self, wr_slot, win_len, n_sink, cap):
        """The oldest valid window token's slot: ``win_len`` ring steps back from ``wr_slot``."""
        return Mux(wr_slot >= n_sink + win_len, wr_slot - win_len, wr_slot + cap - n_sink - win_len)

    def elaborate(self, platform):
        m = Module()
        cmd, wr, rd = self.cmd, self.wr, self.rd

        cap, n_sink, n_window = self.state.cap, self.state.n_sink, self.state.n_window
        count, win_len = self.state.count, self.state.win_len
        wr_slot, reading = self.state.wr_slot, self.state.reading
        ok = self._ok_reg
        c = self._caches
        win_lo, lo_slot, n_sink_valid, n_valid = c.win_lo, c.lo_slot, c.n_sink_valid, c.n_valid

        # Proof-only: every cached register against the formula it caches (``state.caches_agree``,
        # an invariant in hdl/ring/formal.py). Nothing in the datapath reads it; synthesis removes it.
        lo_expected = Signal(self.slot_bits)
        win_lo_expected = Signal(self.pos_bits)
        n_sink_valid_expected = Signal(self.count_bits)
        n_valid_expected = Signal(self.count_bits)
        ring_len_expected = Signal(self.slot_bits + 1)
        slot_minus_count_expected = Signal(self.slot_bits + 1)
        m.d.comb += [
            lo_expected.eq(self._lo_slot_formula(wr_slot, win_len, n_sink, cap)),
            win_lo_expected.eq(count - win_len),
            n_sink_valid_expected.eq(Mux(count < n_sink, count, n_sink)),
            n_valid_expected.eq(n_sink_valid_expected + win_len),
            ring_len_expected.eq(cap - n_sink),
            slot_minus_count_expected.eq(wr_slot - count),
        ]
        # lo_slot means nothing while unconfigured (a refused configuration can put n_sink
        # outside the slot range); nothing reads it then and CLEAR sets it.
        caches_agree = ((~ok | ((lo_slot == lo_expected)
                                & (c.window_full == self._window_full(win_len, n_window))))
                        & (win_lo == win_lo_expected)
                        & (n_sink_valid == n_sink_valid_expected)
                        & (n_valid == n_valid_expected)
                        & (c.ring_len == ring_len_expected)
                        & (c.last_slot == (cap - 1)[:self.count_bits])
                        & (c.last_win == (n_window - 1)[:self.count_bits])
                        & (~reading | (c.read_last == (n_valid - 2)[:self.count_bits]))
                        & (c.in_sinks == (count < n_sink))
                        & (c.at_limit == (count == 2 ** self.pos_bits - 1))
                        & (c.slot_minus_count == slot_minus_count_expected))
        m.d.comb += [self.state.ok.eq(ok), self.state.caches_agree.eq(caches_agree)]

        in_sinks = c.in_sinks
        wr_at_last = wr_slot == c.last_slot
        m.d.comb += [
            self.configured.eq(ok),
            self.n_valid.eq(n_valid),
            self.appended.eq(count),
            self.cap.eq(cap),
            self.sinks.eq(n_sink),
            self.n_sink_valid.eq(n_sink_valid),
            self.win_len.eq(win_len),
            self.lo_slot.eq(lo_slot),
            self.win_lo.eq(win_lo),
        ]

        # A command is taken only when both outputs are drained, so responses leave in command
        # order and at most one output holds a beat at a time.
        m.d.comb += cmd.ready.eq(~reading & (~wr.valid | wr.ready) & (~rd.valid | rd.ready))
        with m.If(wr.ready):
            m.d.sync += wr.valid.eq(0)
        with m.If(rd.ready):
            m.d.sync += rd.valid.eq(0)

        with m.If(cmd.valid & cmd.ready):
            with m.Switch(cmd.payload.op):
                with m.Case(Op.APPEND):
                    m.d.sync += [wr.valid.eq(1), wr.payload.eq(0)]
                    with m.If(ok & ~c.at_limit):
                        m.d.sync += [
                            wr.payload.ok.eq(1),
                            wr.payload.pos.eq(count),
                            count.eq(count + 1),
                            c.at_limit.eq(count == 2 ** self.pos_bits - 2),
                            c.in_sinks.eq(count + 1 < n_sink),
                        ]
                        with m.If(in_sinks):
                            m.d.sync += [
                                wr.payload.slot.eq(count),
                                n_sink_valid.eq(n_sink_valid + 1),
                                n_valid.eq(n_valid + 1),
                                win_lo.eq(win_lo + 1),
                                c.slot_minus_count.eq(c.slot_minus_count - 1),
                            ]
                        with m.Else():
                            m.d.sync += [
                                wr.payload.slot.eq(wr_slot),
                                wr_slot.eq(self._next_window_slot(wr_slot, wr_at_last, n_sink)),
                            ]
                            # wr_slot and count both advance, except when wr_slot wraps back
                            # ring_len slots.
                            with m.If(wr_at_last):
                                m.d.sync += c.slot_minus_count.eq(c.slot_minus_count - c.ring_len)
                            with m.If(c.window_full):
                                m.d.sync += [
                                    wr.payload.evict.eq(1),
                                    wr.payload.evict_slot.eq(lo_slot),
                                    wr.payload.evict_pos.eq(win_lo),
                                    lo_slot.eq(self._next_window_slot(
                                        lo_slot, lo_slot == c.last_slot, n_sink)),
                                    win_lo.eq(win_lo + 1),
                                ]
                            with m.Else():
                                m.d.sync += [
                                    win_len.eq(win_len + 1),
                                    n_valid.eq(n_valid + 1),
                                    c.window_full.eq(self._fills_window(win_len, c.last_win)),
                                ]

                with m.Case(Op.READ):
                    m.d.sync += [rd.valid.eq(1), rd.payload.eq(0)]
                    with m.If(n_valid == 0):
                        m.d.sync += [rd.payload.empty.eq(1), rd.payload.last.eq(1)]
                    with m.Else():
                        first_is_sink = n_sink_valid != 0
                        m.d.sync += [
                            rd.payload.slot.eq(Mux(first_is_sink, 0, lo_slot)),
                            rd.payload.pos.eq(Mux(first_is_sink, 0, win_lo)),
                            rd.payload.last.eq(n_valid == 1),
                            reading.eq(n_valid != 1),
                            c.read_last.eq(n_valid - 2),
                        ]

                with m.Case(Op.EVICT_UPTO):
                    # Sinks sit below win_lo, so raising the window's lower edge never touches them.
                    upto = cmd.payload.pos
                    with m.If(upto > win_lo):
                        # The window shrinks, and it was at most n_window long.
                        m.d.sync += c.window_full.eq(0)
                        with m.If(upto >= count):
                            m.d.sync += [
                                win_len.eq(0),
                                win_lo.eq(count),
                                n_valid.eq(n_sink_valid),
                                lo_slot.eq(wr_slot),
                            ]
                        with m.Else():
                            # upto lies inside the window, so wr_slot - (count - upto) is within
                            # one ring length below wr_slot: at most one wrap to undo.
                            back = (c.slot_minus_count + upto)[:self.slot_bits + 1].as_signed()
                            kept = (count - upto)[:self.count_bits]
                            m.d.sync += [
                                win_len.eq(kept),
                                win_lo.eq(upto),
                                n_valid.eq(n_sink_valid + kept),
                                lo_slot.eq(Mux(back < n_sink, back + c.ring_len, back)),
                            ]

                with m.Case(Op.CLEAR):
                    good = self._config_ok(self.kv_max_tokens, self.n_sink, self.n_window)
                    m.d.sync += [
                        cap.eq(self.kv_max_tokens),
                        n_sink.eq(self.n_sink),
                        n_window.eq(self.n_window),
                        ok.eq(good),
                        self.cfg_err.eq(~good),
                        count.eq(0),
                        win_len.eq(0),
                        wr_slot.eq(self.n_sink),
                        win_lo.eq(0),
                        lo_slot.eq(self.n_sink),
                        n_sink_valid.eq(0),
                        n_valid.eq(0),
                        c.window_full.eq(self._window_full(0, self.n_window)),
                        c.last_win.eq(self.n_window - 1),
                        c.in_sinks.eq(self.n_sink != 0),
                        c.at_limit.eq(0),
                        c.ring_len.eq(self.kv_max_tokens - self.n_sink),
                        c.last_slot.eq(self.kv_max_tokens - 1),
                        c.slot_minus_count.eq(self.n_sink[:self.slot_bits]),
                    ]

        # The rd register is the read iterator: the next entry follows from the current one.
        with m.If(reading & (~rd.valid | rd.ready)):
            idx = rd.payload.cache_pos + 1
            is_last = rd.payload.cache_pos == c.read_last
            m.d.sync += [
                rd.valid.eq(1),
                rd.payload.cache_pos.eq(idx),
                rd.payload.last.eq(is_last),
            ]
            slot, pos = self._read_next(rd.payload, idx, n_sink_valid, lo_slot, win_lo, n_sink,
                                        c.last_slot)
            m.d.sync += [rd.payload.slot.eq(slot), rd.payload.pos.eq(pos)]
            with m.If(is_last):
                m.d.sync += reading.eq(0)

        return m
