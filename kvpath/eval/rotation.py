"""Hadamard rotation of the attention's Q, K, V as llama.cpp applies it to a quantized KV cache.

llama.cpp (since PR 21038) rotates K and V with an orthonormal Walsh-Hadamard matrix before they are
written to a quantized cache: K by H_K, whose size is the largest power of two >= 64 dividing head_dim,
V by H_V (size 64); Q is rotated by H_K so that Q.K is unchanged, and the attention output is rotated
back by H_V (H is symmetric and orthonormal, so its own inverse). Each rotates consecutive groups of
``n`` elements of a head vector.

This is the float32 NumPy version used by the eval path. The bit-exact rotation unit of the hardware is
a later step: ``rotate`` is the one function the forward pass calls, so it can be swapped for the
golden integer one.
"""

from __future__ import annotations

import functools

import numpy as np

MIN_SIZE = 64


@functools.lru_cache(maxsize=8)
def hadamard(n: int) -> np.ndarray:
    """The n x n orthonormal Walsh-Hadamard matrix built as llama.cpp builds it: H[0][0] = 1/sqrt(n),
    then for s = 1, 2, 4, ...: H[i+s][j] = H[i][j+s] = H[i][j], H[i+s][j+s] = -H[i][j]."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"Hadamard size must be a power of two, got {n}")
    h = np.zeros((n, n), dtype=np.float32)
    h[0, 0] = 1.0 / np.sqrt(np.float32(n))
    s = 1
    while s < n:
        h[s:2 * s, :s] = h[:s, :s]
        h[:s, s:2 * s] = h[:s, :s]
        h[s:2 * s, s:2 * s] = -h[:s, :s]
        s *= 2
    h.setflags(write=False)
    return h


def k_size(head_dim: int) -> int:
    """H_K's size: the largest power of two >= 64 dividing head_dim (0: no rotation possible)."""
    n = head_dim & -head_dim
    return n if n >= MIN_SIZE else 0


def v_size(head_dim: int) -> int:
    return MIN_SIZE if head_dim % MIN_SIZE == 0 else 0


def rotate(x: np.ndarray, n: int) -> np.ndarray:
    """x[..., head_dim] with every group of n consecutive elements multiplied by H_n (float32)."""
    h = hadamard(n)
    shape = x.shape
    y = x.reshape(*shape[:-1], shape[-1] // n, n) @ h.T
    return y.reshape(shape).astype(np.float32, copy=False)


def unrotate(x: np.ndarray, n: int) -> np.ndarray:
    """The inverse of ``rotate`` (H is symmetric and orthonormal: H^T H = I)."""
    h = hadamard(n)
    shape = x.shape
    y = x.reshape(*shape[:-1], shape[-1] // n, n) @ h
    return y.reshape(shape).astype(np.float32, copy=False)


def rotate_fp16_exact(x: np.ndarray, n: int) -> np.ndarray:
    """What kvpath's rotation unit does to K or V: x rounded to FP16 (the hardware's input), then
    ``kvpath.golden.hadamard.ref_hadamard`` (exact sums, one rounding to FP16), back as float32.
    ``n`` must be a power of 4 (64, 256)."""
    from kvpath.golden.hadamard import ref_hadamard

    bits = np.ascontiguousarray(x, dtype=np.float32).astype(np.float16).view(np.uint16)
    return ref_hadamard(bits, n)[0].view(np.float16).astype(np.float32)
