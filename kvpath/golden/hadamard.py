"""The Walsh–Hadamard rotation of K/V vectors, bit-exact golden model (docs/numerics.md, "Hadamard
rotation").

llama.cpp rotates K and V with the orthonormal Walsh–Hadamard matrix ``H = H_n / sqrt(n)`` (Sylvester
order, ``H_n[i, j] = (-1)**popcount(i & j)``), block-diagonal over each vector: ``y = H x`` for every
``n`` consecutive elements. kvpath computes the same product in integers:

1. sanitize the FP16 inputs as the quantizer does (+/-Inf -> +/-65504, NaN -> +0; counted);
2. each element to fixed point, ``x = fx * 2**-24`` exactly (``fp16.fx_signed``, |fx| < 2**40);
3. the butterflies ``(a, b) -> (a + b, a - b)`` in integers: every sum is exact (|fx| < 2**(40 +
   log2 n)), so the order of the stages does not change a single bit and the RTL may pipeline them
   however it likes;
4. one scale and one rounding: ``1 / sqrt(n) = 2**-k`` for ``n = 4**k`` (a shift, exact), then
   round-to-nearest-even to FP16, saturating at +/-65504 (counted; only inputs near FP16's range
   can reach it, ``|y| <= sqrt(n) max|x|``). An exact zero is +0; a non-zero result
   that rounds to zero keeps its sign, as IEEE rounding does.

So each output is ``H x`` correctly rounded to FP16: the one rounding any FP16 result must have.
``n`` must be a power of 4 (64 and 256 cover head_dim 64 and 256 in llama.cpp's choice, the largest
power of two >= 64 that divides head_dim); for ``n = 2 * 4**k`` (head_dim 128) ``1/sqrt(n)`` is
irrational and the scale would need a rounded constant: not implemented, refused with an error.
"""

from __future__ import annotations

import numpy as np

from kvpath.golden.num import fp16


def size_exponent(n: int) -> int:
    """``k`` with ``n = 4**k``; a ``ValueError`` for any other size."""
    k = (n.bit_length() - 1) // 2
    if n < 4 or 4 ** k != n:
        raise ValueError(f"Hadamard size {n}: kvpath rotates with n = 4**k (64, 256, ...), where 1/sqrt(n) is a "
                         f"power of two; n = 2 * 4**k would need a rounded 1/sqrt(2) and is not implemented")
    return k


def fwht_int(v: np.ndarray, n: int) -> np.ndarray:
    """Unnormalized Walsh–Hadamard transform (Sylvester order) of every ``n`` consecutive integers of
    the last axis: ``H_n @ v`` per group, exact in int64 (|v| < 2**(62 - log2 n))."""
    v = np.asarray(v, dtype=np.int64)
    shape = v.shape
    if shape[-1] % n:
        raise ValueError(f"last axis {shape[-1]} is not a multiple of the Hadamard size {n}")
    y = v.reshape(-1, n).copy()
    h = 1
    while h < n:
        y = y.reshape(-1, n // (2 * h), 2, h)
        a, b = y[:, :, 0, :], y[:, :, 1, :]
        y = np.stack([a + b, a - b], axis=2)
        h *= 2
    return y.reshape(shape)


def ref_hadamard(x_bits, n: int):
    """Rotate FP16 vectors: ``(y_bits, n_nonfinite, n_saturated)``.

    ``x_bits``: uint16 FP16 patterns, last axis a multiple of ``n``; ``y_bits`` has the same shape.
    """
    k = size_exponent(n)
    x_bits = np.asarray(x_bits)
    bits, n_nonfinite = fp16.sanitize(x_bits)
    y = fwht_int(fp16.fx_signed(bits), n)
    out, saturated = fp16.encode((y < 0).astype(np.int64), np.abs(y), np.full(y.shape, -24 - k, dtype=np.int64))
    return out.reshape(x_bits.shape), n_nonfinite, int(np.count_nonzero(saturated))


def float_hadamard(x: np.ndarray, n: int) -> np.ndarray:
    """llama.cpp's rotation as it computes it: float32 ``x @ H`` per group (H symmetric), for comparing."""
    x = np.asarray(x, dtype=np.float32)
    i = np.arange(n)
    h = np.where(np.bitwise_count(i[:, None] & i[None, :]) & 1, -1.0, 1.0).astype(np.float32) / np.float32(np.sqrt(n))
    return (x.reshape(-1, n) @ h).reshape(x.shape)


def compare_with_float32(rows: int = 2000, n: int = 64, seed: int = 20261205) -> dict[str, object]:
    """kvpath's rotation against llama.cpp's float32 one on standard-normal FP16 data: elements that
    differ once rounded to FP16 (and by how many ulps at most), and the fraction of ggml blocks whose
    bytes differ between ``gguf.quantize`` of the two (docs/numerics.md, "Hadamard rotation")."""
    import gguf

    x = np.random.default_rng(seed).standard_normal((rows, n)).astype(np.float16)
    ours = ref_hadamard(x.view(np.uint16), n)[0]
    theirs32 = float_hadamard(x.astype(np.float32), n)
    ulps = np.abs(ours.astype(np.int32) - theirs32.astype(np.float16).view(np.uint16).astype(np.int32))
    out = {"elements": ours.size, "differ": int(np.count_nonzero(ulps)), "max_ulp": int(ulps.max())}
    for name in ("Q4_0", "Q4_1", "Q8_0"):
        t = gguf.GGMLQuantizationType[name]
        a = gguf.quantize(ours.view(np.float16).astype(np.float32).reshape(-1, 32), t)
        b = gguf.quantize(theirs32.reshape(-1, 32), t)
        out[name.lower()] = f"{np.count_nonzero((a != b).any(axis=1))} of {len(a)} blocks"
    return out


if __name__ == "__main__":
    for key, value in compare_with_float32().items():
        print(f"{key}: {value}")
