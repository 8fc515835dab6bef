"""Golden model of the static-scale formats int8_ph, int4_ph, int8_pc, int4_pc (docs/static_formats.md).

Integer arithmetic on 16-bit float patterns of the stream's element type (FP16 or BF16), no floating
point. A 16-bit pattern with exponent field ``e`` and fraction ``f`` is ``sig * 2**(ee - bias - F)``
with ``ee = max(e, 1)`` and ``sig = f + (e > 0) * 2**F`` (``F`` fraction bits): normal and subnormal
alike, no normalization needed because every product below is exact.

* Quantize (per element, ``inv`` the entry's reciprocal half): ``P = sig_x * sig_inv`` exactly
  (11 x 11 bits for FP16, 8 x 8 for BF16), ``q = floor(P * 2**-s + 1/2)`` (ties away from zero, on the
  magnitude, as ggml's q8_0 ``roundf``), clamped to ``qmax = 127`` / ``7`` (each clamp counted as
  saturated), negated when ``sign(x) != sign(inv)``. Input elements are sanitized first (Inf -> +-max
  finite, NaN -> +0, counted). A non-finite ``inv`` (the cache refuses such writes) is treated as 0.
* Dequantize: ``code * scale`` exactly, rounded to nearest even in the element type; a magnitude that
  would round beyond the largest finite value saturates to it (counted). Sign = sign(code) XOR
  sign(scale), so a zero code gives a zero with the scale's sign. A non-finite ``scale`` is treated as
  +0 and counted per element.
* Codes: int8 two's complement bytes; int4 two's complement nibbles, element ``2k`` in the low
  nibble of byte ``k``, element ``2k + 1`` in the high nibble (stream order: a beat packs on its own).
* Context: a beat (or an array's last axis) belongs to one (layer, head, kv) and, per channel, covers
  channels ``channel .. channel + n - 1``. An out-of-range context (or, per beat, a channel that is not
  a multiple of the lanes) gives code 0 / value +0 for the whole beat and is counted; nothing else of
  that beat is counted except non-finite input elements.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

import numpy as np

from kvpath import packing, scales
from kvpath.config import DEFAULT, KVPathConfig, check_elem, get_format

from kvpath.elements import element, of_dtype
from kvpath.golden.num import elem as E


QMAX = {8: 127, 4: 7}


def _static(fmt: str):
    f = get_format(fmt)
    if f.family != "static":
        raise ValueError(f"{f.name} is not a static-scale format; use kvpath.golden.quantize")
    return f


def value_of(bits: int, elem: str) -> Fraction:
    """Exact value of one finite pattern."""
    t = element(elem)
    s, sig, ee = (int(v) for v in E.decode(np.uint16(bits), t))
    v = Fraction(sig) * Fraction(2) ** (ee - t.bias - t.frac_bits)
    return -v if s else v


def encode_fraction(v: Fraction, elem: str) -> tuple[int, bool]:
    """RNE pattern of an exact rational (scalar); ``(bits, overflow)`` with saturation.

    The quotient is taken to ``frac_bits + 3`` significant bits with a sticky bit below them, which
    is all the one RNE encoder (``num.elem.encode``) needs to round the exact value correctly.
    """
    t = element(elem)
    v = Fraction(v)
    sign = int(v < 0)
    v = abs(v)
    if v == 0:
        return sign << (t.bits - 1), False
    n, d = v.numerator, v.denominator
    k = t.frac_bits + 3 - (n.bit_length() - d.bit_length())
    q, r = divmod(n << k, d) if k >= 0 else divmod(n, d << -k)
    bits, overflow = E.encode(sign, (q << 1) | (r != 0), -k - 1, t)
    return int(bits), bool(overflow)


def round_scale(value: float, elem: str) -> int:
    """A float (e.g. a calibrated scale) rounded to nearest even in the element type."""
    return encode_fraction(Fraction(float(value)), elem)[0]


def make_entry(scale_bits: int, elem: str = "fp16") -> int:
    """The 32-bit cache entry for a scale: ``inv = RNE(1 / scale)`` in the element type, exactly.

    A zero scale gives the all-zero entry (every element quantizes to 0, as an unloaded entry does).
    ValueError for a non-finite scale or one whose reciprocal is beyond the largest finite value
    (``min_scale`` is the smallest positive scale allowed).
    """
    check_elem(elem)
    scale_bits = int(scale_bits) & 0xFFFF
    if not E.finite(scale_bits, element(elem)):
        raise ValueError(f"scale pattern {scale_bits:#06x} is not finite in {elem}")
    v = value_of(scale_bits, elem)
    if v == 0:
        return 0
    inv, overflow = encode_fraction(1 / v, elem)
    if overflow:
        raise ValueError(f"1/scale overflows {elem} for scale {float(v):.6g} (pattern {scale_bits:#06x}); "
                         f"the smallest scale is {float(value_of(min_scale(elem), elem)):.6g}")
    return int(scales.pack_entry(scale_bits, inv))


@lru_cache(maxsize=None)
def min_scale(elem: str = "fp16") -> int:
    """Smallest positive scale pattern whose reciprocal rounds to a finite value."""
    t = element(elem)
    bits, _ = encode_fraction(1 / value_of(t.max_finite, elem), elem)
    while encode_fraction(1 / value_of(bits, elem), elem)[1]:
        bits += 1
    return bits


def apply_writes(entries: np.ndarray, index, value, elem: str = "fp16") -> np.ndarray:
    """The cache's write rule, in order: a write whose index is ``>= len(entries)`` or whose scale or
    reciprocal half is not finite is refused (no effect). Updates ``entries`` (uint32) in place and
    returns the refused mask."""
    index = np.asarray(index, np.int64).reshape(-1)
    value = np.asarray(value, np.uint32).reshape(-1)
    s_bits, i_bits = scales.unpack_entry(value)
    refused = (index < 0) | (index >= len(entries)) | ~E.finite(s_bits, element(elem)) | ~E.finite(i_bits, element(elem))
    take = np.flatnonzero(~refused)
    # Later writes to the same index win: keep each index's last accepted write.
    rev = take[::-1]
    _, first = np.unique(index[rev], return_index=True)
    keep = rev[first]
    entries[index[keep]] = value[keep]
    return refused


def quantize_elements(x_bits, inv_bits, code_bits: int, elem: str):
    """Signed codes (int64) and a saturated mask for sanitized elements and their reciprocals."""
    t = element(elem)
    qmax = QMAX[code_bits]
    sx, mx, ex = E.decode(x_bits, t)
    si, mi, ei = E.decode(inv_bits, t)
    mi = np.where(E.finite(inv_bits, t), mi, 0)
    p = mx * mi
    s = 2 * (t.bias + t.frac_bits) - ex - ei  # q = round(p * 2**-s)
    # p < 2**22: a right shift beyond 40 rounds to 0 exactly as any larger one; a left shift by 10
    # already exceeds qmax for every p >= 1.
    right = np.clip(s, 1, 40)
    q = np.where(s >= 1, (p + (np.int64(1) << (right - 1))) >> right, p << np.clip(-s, 0, 10))
    sat = q > qmax
    q = np.minimum(q, qmax)
    return np.where((sx ^ si) == 1, -q, q), sat


def dequantize_elements(codes, scale_bits, elem: str):
    """``(bits uint16, saturated mask, non-finite scale mask)`` of ``code * scale``."""
    t = element(elem)
    codes = np.asarray(codes, np.int64)
    bad = ~E.finite(scale_bits, t)
    ss, ms, es = E.decode(scale_bits, t)
    ss, ms = np.where(bad, 0, ss), np.where(bad, 0, ms)
    bits, sat = E.encode((codes < 0).astype(np.int64) ^ ss, np.abs(codes) * ms, es - t.bias - t.frac_bits, t)
    return bits, sat, bad


def pack_codes(codes, fmt: str) -> np.ndarray:
    """Signed codes ``(..., n)`` -> bytes ``(..., n * code_bits // 8)`` (``kvpath.packing``)."""
    return packing.pack_codes(np.asarray(codes, np.int64), fmt)


def unpack_codes(data: np.ndarray, fmt: str) -> np.ndarray:
    """Bytes -> signed codes (int64): inverse of ``pack_codes``."""
    raw = packing.unpack_codes(data, fmt)
    half = 1 << (get_format(fmt).code_bits - 1)
    return np.where(raw >= half, raw - 2 * half, raw)


def empty_table(fmt: str, config: KVPathConfig = DEFAULT) -> np.ndarray:
    """The cache after configuration: every entry 0 (scale +0, reciprocal +0)."""
    return np.zeros(scales.entry_count(_static(fmt).scope, config), np.uint32)


def _entries_for(fmt, entries, layer, head, kv, channel0, n, config):
    f = _static(fmt)
    entries = np.asarray(entries, np.uint32)
    if entries.shape != (scales.entry_count(f.scope, config),):
        raise ValueError(f"{f.name} needs {scales.entry_count(f.scope, config)} entries, got shape {entries.shape}")
    if f.scope == "channel":
        if channel0 < 0 or channel0 + n > config.max_head_dim:
            raise ValueError(f"channels {channel0}..{channel0 + n - 1} exceed max_head_dim={config.max_head_dim}")
        idx = scales.entry_index("channel", layer, head, kv, channel0, config) + np.arange(n)
    else:
        idx = np.full(n, scales.entry_index("head", layer, head, kv, 0, config))
    return scales.unpack_entry(entries[idx])


def quantize_report(x: np.ndarray, fmt: str, entries: np.ndarray, layer: int, head: int, kv: int,
                    channel0: int = 0, config: KVPathConfig = DEFAULT):
    """``(codes uint8 (..., n*bits/8), n_nonfinite, n_saturated)`` of ``x`` (float16 or bfloat16,
    last axis = channels ``channel0..`` of one (layer, head, kv)), with the cache table ``entries``."""
    f = _static(fmt)
    elem = of_dtype(np.asarray(x).dtype).name
    n = x.shape[-1]
    _, inv = _entries_for(fmt, entries, layer, head, kv, channel0, n, config)
    bits, n_bad = E.sanitize(np.ascontiguousarray(x).view(np.uint16), element(elem))
    codes, sat = quantize_elements(bits, np.broadcast_to(inv, bits.shape), f.code_bits, elem)
    return pack_codes(codes, f.name), n_bad, int(np.count_nonzero(sat))


def quantize(x, fmt, entries, layer, head, kv, channel0=0, config=DEFAULT) -> np.ndarray:
    return quantize_report(x, fmt, entries, layer, head, kv, channel0, config)[0]


def dequantize_report(data: np.ndarray, fmt: str, entries: np.ndarray, layer: int, head: int, kv: int,
                      channel0: int = 0, dtype=np.float16, config: KVPathConfig = DEFAULT):
    """``(values (..., n) dtype, n_saturated, n_nonfinite_scale)`` of packed codes."""
    f = _static(fmt)
    elem = of_dtype(dtype).name
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        raise ValueError("dequantize expects a numpy uint8 array of packed codes")
    codes = unpack_codes(data, f.name)
    scale, _ = _entries_for(fmt, entries, layer, head, kv, channel0, codes.shape[-1], config)
    bits, sat, bad = dequantize_elements(codes, np.broadcast_to(scale, codes.shape), elem)
    return bits.view(element(elem).dtype), int(np.count_nonzero(sat)), int(np.count_nonzero(bad))


def dequantize(data, fmt, entries, layer, head, kv, channel0=0, dtype=np.float16, config=DEFAULT):
    return dequantize_report(data, fmt, entries, layer, head, kv, channel0, dtype, config)[0]


# Beat level: what the RTL sees, one context per beat of ``lanes`` elements.

def beat_entries(fmt: str, entries, layer, head, kv, channel, lanes: int, config: KVPathConfig = DEFAULT):
    """``(scale, inv, ok)``: per beat and lane the entry halves (zero where the context is bad) and
    the per-beat context-ok mask."""
    f = _static(fmt)
    layer, head, kv, channel = (np.asarray(v, np.int64).reshape(-1) for v in (layer, head, kv, channel))
    ok = scales.context_ok(layer, head, kv, channel, f.scope, config)
    if f.scope == "channel":
        if config.max_head_dim % lanes:
            raise ValueError(f"max_head_dim={config.max_head_dim} is not a multiple of {lanes} lanes")
        ok &= channel % lanes == 0
    safe = [np.where(ok, v, 0) for v in (layer, head, kv, channel)]
    base = scales.entry_index(f.scope, *safe, config=config)
    idx = base[:, None] + (np.arange(lanes) if f.scope == "channel" else np.zeros(lanes, np.int64))
    scale, inv = scales.unpack_entry(np.asarray(entries, np.uint32)[idx])
    return np.where(ok[:, None], scale, 0), np.where(ok[:, None], inv, 0), ok


def quantize_beats(x_bits: np.ndarray, fmt: str, entries, layer, head, kv, channel, elem: str = "fp16",
                   config: KVPathConfig = DEFAULT):
    """``(codes int64 (nb, lanes), counters)`` for raw element patterns ``(nb, lanes)`` uint16."""
    f = _static(fmt)
    x_bits = np.asarray(x_bits, np.uint16)
    _, inv, ok = beat_entries(fmt, entries, layer, head, kv, channel, x_bits.shape[1], config)
    bits, n_bad = E.sanitize(x_bits, element(elem))
    codes, sat = quantize_elements(bits, inv, f.code_bits, elem)
    codes = np.where(ok[:, None], codes, 0)
    return codes, {"nonfinite_count": n_bad, "saturated_count": int(np.count_nonzero(sat & ok[:, None])),
                   "context_error_count": int(np.count_nonzero(~ok))}


def dequantize_beats(codes: np.ndarray, fmt: str, entries, layer, head, kv, channel, elem: str = "fp16",
                     config: KVPathConfig = DEFAULT):
    """``(bits uint16 (nb, lanes), counters)`` for signed codes ``(nb, lanes)``."""
    codes = np.asarray(codes, np.int64)
    scale, _, ok = beat_entries(fmt, entries, layer, head, kv, channel, codes.shape[1], config)
    bits, sat, bad = dequantize_elements(codes, scale, elem)
    bits = np.where(ok[:, None], bits, 0).astype(np.uint16)
    return bits, {"saturated_count": int(np.count_nonzero(sat & ok[:, None])),
                  "nonfinite_count": int(np.count_nonzero(bad & ok[:, None])),
                  "context_error_count": int(np.count_nonzero(~ok))}
