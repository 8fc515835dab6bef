"""Software evaluation of the lane chains at NumPy speed, equal to ``lane()`` element for element.

The RTL implements the exact chains in q8_0/q4_0/q4_1 ``lane()``. Evaluated literally in NumPy
they cost ~20 array passes per element, slower than gguf, so ``quantize`` uses integer
shortcuts whose equality with ``lane()`` is shown in docs/numerics.md ("Software evaluation")
and tested in tests/golden/test_ggml_fast.py:

* q8_0, fused rounding: fl32's RNE at bit ``s`` followed by roundf at bit ``t >= s + 2`` equals
  one shift, ``(P + 2**(s-1) + 2**(t-1)) >> t``. Exact for every element.
* q4_0 / q4_1, margin screen: the chain's roundings move the value by less than 2**-18 in total,
  so ``floor(w + 0.5)`` of the exact real ``w = |x - z0| * |id|`` is the answer unless
  ``w + 0.5`` lies within 2**-15 of an integer; those few elements (about 1 in 3000 on
  normal data) are recomputed with ``lane()``.

All buffers live in a :class:`Workspace` reused across steps: fresh temporaries of this size
cost page faults that would dominate the arithmetic.
"""

from __future__ import annotations

import numpy as np

from kvpath.golden.num import fp16

# 128 Ki elements per inner step. Each NumPy call costs 1-3 us of interpreter overhead, which
# at smaller steps outweighs keeping the 1 MiB int64 buffers in L2 (measured: 512 blocks is
# ~1.3x slower than 4096, 16384 is slower again).
SUB_BLOCKS = 4096

SCREEN_MARGIN_BITS = 15  # recompute elements within 2**-15 of a decision boundary
# Binary points of the screens' fixed-point w. Both finish in int32 at 2**27 (w < 16 leaves
# headroom for the +0.5 and the margin); q4_0's exact product needs only right shifts to get
# there, q4_1 first forms w * 2**50 (below 2**55) from its 44-bit fixed-point table.
Q4_0_POINT = 27
Q4_1_POINT = 27
Q4_1_WIDE_POINT = 50


class Workspace:
    """Preallocated per-element buffers for one inner step."""

    def __init__(self, blocks: int | None = None):
        blocks = SUB_BLOCKS if blocks is None else blocks
        n = blocks * 32
        self.blocks = blocks
        self.idx = np.empty(n, np.intp)
        self.a = np.empty(n, np.int64)
        self.b = np.empty(n, np.int64)
        self.c = np.empty(n, np.int64)
        self.i32 = np.empty(n, np.int32)
        self.i32b = np.empty(n, np.int32)
        self.u16 = np.empty(n, np.uint16)
        self.m16 = np.empty(n, np.uint16)
        self.i16 = np.empty(n, np.int16)
        self.s16 = np.empty(n, np.int16)
        self.i8 = np.empty(n, np.int8)


def _steps(nb: int, ws: Workspace):
    for lo in range(0, nb, ws.blocks):
        hi = min(lo + ws.blocks, nb)
        yield lo, hi, (hi - lo) * 32


def _sign_mask(x: np.ndarray, ws: Workspace, n: int) -> np.ndarray:
    """int8 0 / -1 per element from the FP16 sign bit."""
    np.right_shift(x.view(np.int16), 15, out=ws.i16[:n])
    s8 = ws.i8[:n]
    np.copyto(s8, ws.i16[:n], casting="unsafe")
    return s8


def _normalize(x: np.ndarray, ws: Workspace, n: int, signed: bool = False):
    """``(M, E)`` of each element: ``|x| = M * 2**(E - 25)``, M in [1024, 2047] (int64, int16).

    Normal numbers by bit fields; the rare subnormals and zeros from the 15-bit table. A table
    gather for every element costs more than these few narrow operations. ``signed`` gives
    ``M`` the sign of ``x`` (applied in int16, before widening).
    """
    mag, e16, m16, m = ws.u16[:n], ws.i16[:n], ws.m16[:n], ws.a[:n]
    np.bitwise_and(x, fp16.MAG, out=mag)
    np.right_shift(mag, 10, out=e16, casting="unsafe")
    np.bitwise_and(mag, fp16.FRAC_MASK, out=m16)
    np.bitwise_or(m16, 1024, out=m16)
    if signed:
        s16, m16 = ws.s16[:n], m16.view(np.int16)
        np.right_shift(x.view(np.int16), 15, out=s16)  # 0 / -1
        np.bitwise_xor(m16, s16, out=m16)  # two's complement negate where s = -1
        np.subtract(m16, s16, out=m16)
    np.copyto(m, m16)
    sub = np.flatnonzero(e16 == 0)
    if sub.size:
        _, norm_m, norm_e = fp16._tables()
        m[sub] = norm_m[mag[sub]]
        if signed:
            m[sub] *= 1 - 2 * (x[sub] >> 15).astype(np.int64)
        e16[sub] = norm_e[mag[sub]]
    return m, e16


def _per_element_shift(e16, c_step, ws: Workspace, n: int):
    """``c - E`` per element in ``ws.b`` (int64), ``c`` a per-block constant."""
    tmp, t = ws.c[:n], ws.b[:n]
    np.copyto(tmp, e16)
    np.subtract(c_step[:, None], tmp.reshape(-1, 32), out=t.reshape(-1, 32))
    return t


def q8_0_codes(bits: np.ndarray, c, ws: Workspace) -> np.ndarray:
    """(nb, 32) patterns, q8_0 Const -> (nb, 32) int8 codes, via the fused-rounding identity.

    Per element: ``P = M * id_sig`` (M the normalized 11-bit significand), ``s = 10 + top bit``
    (fl32's rounding position) and ``t = 25 - E - id_exp`` (roundf's, >= 17):
    ``q = (P + 2**(s-1) + 2**(t-1)) >> t``, computed as ``((P + 2**(s-1)) >> (t-1) + 1) >> 1`` so
    no term reaches 2**63. Shifts of 64 or more give 0 in NumPy, the right code for tiny x.
    """
    nb = bits.shape[0]
    out = np.empty((nb, 32), np.int8)
    # A zero block has id_sig = 0: P = 0 and any t >= 11 rounds the bias away.
    t1_block = np.where(c.id_sig == 0, 60, 24 - c.id_exp).reshape(-1)
    sig_block = c.id_sig.reshape(-1)
    for lo, hi, n in _steps(nb, ws):
        x = bits[lo:hi].reshape(-1)
        m, e16 = _normalize(x, ws, n)
        m2 = m.reshape(-1, 32)
        np.multiply(m2, sig_block[lo:hi, None], out=m2)  # P
        t1 = _per_element_shift(e16, t1_block[lo:hi], ws, n)  # t - 1
        tmp = ws.c[:n]
        np.right_shift(m, 34, out=tmp)  # top bit of P: s = 10 + top
        np.left_shift(512, tmp, out=tmp)  # 2**(s-1)
        m += tmp
        r = ws.i32[:n]  # what is left after the shift is below 2**9: finish in int32
        np.right_shift(m, t1, out=r, casting="unsafe")
        r += 1
        np.right_shift(r, 1, out=r)
        q = out.reshape(-1)[lo * 32 : hi * 32]
        np.copyto(q, r, casting="unsafe")
        s8 = _sign_mask(x, ws, n)  # two's complement negate: (q ^ s) - s
        np.bitwise_xor(q, s8, out=q)
        np.subtract(q, s8, out=q)
    return out


def q4_0_codes(bits: np.ndarray, c, lane, ws: Workspace) -> np.ndarray:
    """(nb, 32) uint8 codes ``min(15, 8 + floor(y + 0.5))``, ``y = x * id``, via the screen.

    Without a table: with ``M`` and ``id_sig`` carrying the signs of ``x`` and ``id``,
    ``v = (M * id_sig) >> (C - E)`` is ``y * 2**27`` rounded down (by less than 2**-27; the
    shift is arithmetic). ``C - E >= 3`` for every non-zero element, since |y| <= 8 and
    ``|M * id_sig| >= 2**33``; for zeros the product is 0 and any shift gives 0. Adding
    ``8.5 * 2**27`` plus the margin, ``t >> 27`` is the code for every element not flagged.
    """
    nb = bits.shape[0]
    out = np.empty((nb, 32), np.uint8)
    c_blk = (25 - Q4_0_POINT - c.id_exp).reshape(-1)
    s_blk = np.where(c.id_neg == 1, -c.id_sig, c.id_sig).reshape(-1)  # signed id significand
    frac, margin = (1 << Q4_0_POINT) - 1, 1 << (Q4_0_POINT - SCREEN_MARGIN_BITS)
    near: list = []
    for lo, hi, n in _steps(nb, ws):
        x = bits[lo:hi].reshape(-1)
        p, e16 = _normalize(x, ws, n, signed=True)
        p2 = p.reshape(-1, 32)
        np.multiply(p2, s_blk[lo:hi, None], out=p2)
        t = ws.i32[:n]  # y * 2**27 in [-2**30, 2**30]: the rest runs in int32
        np.right_shift(p, _per_element_shift(e16, c_blk[lo:hi], ws, n), out=t, casting="unsafe")
        t += (17 << (Q4_0_POINT - 1)) + margin  # (8.5 + y) * 2**27 + margin, > 0
        _screen_4bit(t, Q4_0_POINT, frac, margin, out.reshape(-1)[lo * 32 : hi * 32], near, lo, ws, n)
    return _patch(out, bits, c, near, lane)


def q4_1_codes(bits: np.ndarray, c, lane, ws: Workspace) -> np.ndarray:
    """(nb, 32) uint8 codes: min(round(w), 15) with ``w = (x - min) * id``.

    Screen: ``v = ((Z >> a) - (Zmin >> a)) * (id_sig << b)`` with ``Z = x * 2**44`` from a table
    and ``a``/``b`` per block so that ``v = w * 2**50``; then ``v >> 23`` continues in int32 at
    ``w * 2**27``. Subtracting before multiplying keeps every intermediate exact and below 2**55,
    also in blocks far from zero where ``x * id`` alone would exceed int64. The two truncations
    (the separate shifts of ``Z`` and ``Zmin``, then ``>> 23``) move ``w`` by less than
    2**-26 + 2**-27, far inside the margin.
    """
    nb = bits.shape[0]
    out = np.empty((nb, 32), np.uint8)
    lut = fp16.fx44_tables()[1]
    frac, margin = (1 << Q4_1_POINT) - 1, 1 << (Q4_1_POINT - SCREEN_MARGIN_BITS)
    k = c.id_exp.reshape(-1) + (Q4_1_WIDE_POINT - 44)
    a_blk = np.maximum(-k, 0)
    s_blk = c.id_sig.reshape(-1) << np.maximum(k, 0)
    zmin_blk = (c.kmin.reshape(-1) << 20) >> a_blk
    near: list = []
    for lo, hi, n in _steps(nb, ws):
        x = bits[lo:hi].reshape(-1)
        idx, v = ws.idx[:n], ws.a[:n]
        np.copyto(idx, x)
        # Indices are 16-bit patterns, always inside the 65536-entry table, so "wrap" never
        # wraps; it only skips the bounds check that makes the default mode ~1.7x slower.
        np.take(lut, idx, out=v, mode="wrap")
        v2 = v.reshape(-1, 32)
        np.right_shift(v2, a_blk[lo:hi, None], out=v2)
        np.subtract(v2, zmin_blk[lo:hi, None], out=v2)
        np.multiply(v2, s_blk[lo:hi, None], out=v2)
        t = ws.i32[:n]
        np.right_shift(v, Q4_1_WIDE_POINT - Q4_1_POINT, out=t, casting="unsafe")
        # One add serves both: t = (w + 0.5) * 2**27 + margin. Elements whose t has a fraction
        # below 2 * margin are near a boundary and recomputed; for all others t >> 27 is
        # floor(w + 0.5).
        t += (1 << (Q4_1_POINT - 1)) + margin
        _screen_4bit(t, Q4_1_POINT, frac, margin, out.reshape(-1)[lo * 32 : hi * 32], near, lo, ws, n)
    return _patch(out, bits, c, near, lane)


def _screen_4bit(t, point: int, frac: int, margin: int, q, near: list, lo: int, ws: Workspace, n: int):
    """The 4-bit codes' common tail: ``t`` holds the shifted value plus the rounding offset and the
    screen margin at binary point ``point``; elements whose fraction lies below ``2 * margin`` are
    near a decision boundary and listed in ``near`` for the exact lane; the rest are
    ``min(15, t >> point)`` (``t >> point`` is at most 16)."""
    tmp = ws.i32b[:n]
    np.bitwise_and(t, frac, out=tmp)
    hits = np.flatnonzero(tmp < 2 * margin)
    if hits.size:
        near.append(hits + lo * 32)
    np.right_shift(t, point, out=t)
    np.copyto(q, t, casting="unsafe")
    np.minimum(q, 15, out=q)


def _patch(q: np.ndarray, bits: np.ndarray, c, near: list, lane):
    """Recompute the flagged elements with ``lane``; with ``lane=None`` return (q, indices) instead.

    The second form lets tests check the screen's claim: every element it would get wrong is
    flagged.
    """
    idx = np.concatenate(near) if near else np.empty(0, np.intp)
    if lane is None:
        return q, idx
    if idx.size == 0:
        return q
    blk = idx // 32
    consts = type(c)(*(np.broadcast_to(f, (bits.shape[0], 1))[blk, 0] for f in c))
    q.reshape(-1)[idx] = lane(bits.reshape(-1)[idx], consts)
    return q
