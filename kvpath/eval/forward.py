"""The llama forward pass of SmolLM2 in NumPy float32, batched over a chunk of tokens.

Per layer: RMS norm, Q/K/V projections, llama.cpp's interleaved ("normal") rope on the GGUF layout
(pairs (2i, 2i+1), angle pos * theta^(-2i/head_dim)), then optionally the Hadamard rotation
(``rotation.rotate``: Q and K by H_K, V by H_V), then K/V through ``kv(layer, k, v)`` (what the KV
cache gives back: ``kvio.KVStore``), causal attention of every query over the cache positions <= its
own (grouped-query: query head h reads KV head h // (n_heads / n_kv_heads)), the output rotated back by
H_V, the output projection, and the SwiGLU feed-forward. The output head is the token embedding (tied).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from kvpath.eval import rotation as rot
from kvpath.eval.model import Model

KVHook = Callable[[int, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def rmsnorm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    ms = np.mean(x * x, axis=-1, keepdims=True, dtype=np.float32)
    return (x / np.sqrt(ms + np.float32(eps))) * w


def rope_tables(n: int, head_dim: int, theta: float, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin ``[n, head_dim/2]`` for positions start..start+n-1 (angles in float64, then float32)."""
    pos = np.arange(start, start + n, dtype=np.float64)[:, None]
    freq = theta ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    ang = pos * freq[None, :]
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


def rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Interleaved rope on ``x [T, heads, head_dim]``: pair (2i, 2i+1) rotated by angle i."""
    x0, x1 = x[..., 0::2], x[..., 1::2]
    c, s = cos[:, None, :], sin[:, None, :]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * c - x1 * s
    out[..., 1::2] = x0 * s + x1 * c
    return out


def attention(q: np.ndarray, k, v) -> np.ndarray:
    """Causal grouped-query attention: ``q [T, H, D]``, ``k``/``v [T, Hkv, D]`` (position t of the cache
    is token t of the chunk) -> ``[T, H, D]``. Query t sees cache positions 0..t only.

    ``k`` and ``v`` may be ``kvio.TieredRows`` (both or neither): query t then reads position j from the
    hot rows where ``hot_mask[t, j]``, from the cold rows elsewhere."""
    tiered = hasattr(k, "cold")
    if tiered != hasattr(v, "cold"):
        raise ValueError("K and V must both be tiered or both plain")
    T, H, D = q.shape
    k_rows = k.cold if tiered else k
    Hkv = k_rows.shape[1]
    rep = H // Hkv
    mask = np.triu(np.full((T, T), -np.inf, dtype=np.float32), 1)  # -inf above the diagonal: the future
    hot = k.hot_mask(T) if tiered else None
    if tiered and not np.array_equal(hot, v.hot_mask(T)):
        raise ValueError("K and V tiers differ")
    scale = np.float32(1.0 / np.sqrt(D))
    out = np.empty((T, H, D), dtype=np.float32)
    for g in range(Hkv):  # one 2-D product per KV head: its query heads stacked as rows
        qg = q[:, g * rep:(g + 1) * rep].transpose(1, 0, 2).reshape(rep * T, D)
        s = (qg @ k_rows[:, g].T).reshape(rep, T, T)  # [rep, T, T]
        if tiered:
            s = np.where(hot[None], (qg @ k.hot[:, g].T).reshape(rep, T, T), s)
        s *= scale
        s += mask
        s -= s.max(axis=-1, keepdims=True)
        np.exp(s, out=s)
        s /= s.sum(axis=-1, keepdims=True)
        if tiered:
            p_hot = np.where(hot[None], s, np.float32(0))
            s -= p_hot
            o = p_hot.reshape(rep * T, T) @ v.hot[:, g] + s.reshape(rep * T, T) @ v.cold[:, g]
        else:
            o = s.reshape(rep * T, T) @ v[:, g]
        out[:, g * rep:(g + 1) * rep] = o.reshape(rep, T, D).transpose(1, 0, 2)
    return out


def forward(model: Model, tokens, kv: KVHook | None = None, rotation: str = "none") -> np.ndarray:
    """Logits float32 ``[T, vocab]`` of a chunk of token ids starting at position 0.

    ``kv(layer, k, v)``: what attention reads of the chunk's K and V (float32 ``[T, n_kv_heads,
    head_dim]``, after rope and rotation); None keeps the float32 values (the FP32 reference).
    ``rotation``: ``none``, ``hadamard`` (float32, as llama.cpp) or ``hadamard_rtl`` (K and V through
    kvpath's bit-exact rotation unit, ``rotation.rotate_fp16_exact``; Q and the output in float32).
    """
    if rotation not in ("none", "hadamard", "hadamard_rtl"):
        raise ValueError(f"rotation must be none, hadamard or hadamard_rtl, got {rotation!r}")
    hp = model.hp
    tokens = np.asarray(tokens, dtype=np.int64)
    T, D = len(tokens), hp.head_dim
    if rotation != "none":
        nk, nv = rot.k_size(D), rot.v_size(D)
        if not nk or not nv:
            raise ValueError(f"head_dim {D} admits no Hadamard rotation")
    cos, sin = rope_tables(T, D, hp.rope_theta)
    x = model.embed[tokens].astype(np.float32)
    for i, layer in enumerate(model.layers):
        h = rmsnorm(x, layer.attn_norm, hp.rms_eps)
        q = rope((h @ layer.wq.T).reshape(T, hp.n_heads, D), cos, sin)
        k = rope((h @ layer.wk.T).reshape(T, hp.n_kv_heads, D), cos, sin)
        v = (h @ layer.wv.T).reshape(T, hp.n_kv_heads, D)
        if rotation == "hadamard":
            q, k, v = rot.rotate(q, nk), rot.rotate(k, nk), rot.rotate(v, nv)
        elif rotation == "hadamard_rtl":
            q, k, v = rot.rotate(q, nk), rot.rotate_fp16_exact(k, nk), rot.rotate_fp16_exact(v, nv)
        if kv is not None:
            k, v = kv(i, k, v)
        o = attention(q, k, v)
        if rotation != "none":
            o = rot.unrotate(o, nv)
        x = x + o.reshape(T, hp.n_heads * D) @ layer.wo.T
        h = rmsnorm(x, layer.ffn_norm, hp.rms_eps)
        g = h @ layer.w_gate.T
        x = x + ((g / (1.0 + np.exp(-g))) * (h @ layer.w_up.T)) @ layer.w_down.T
    return rmsnorm(x, model.out_norm, hp.rms_eps) @ model.embed.T
