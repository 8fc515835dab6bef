"""Accuracy metrics of one configuration against the FP16-K/V run (llama.cpp's KL-divergence baseline).

Every chunk scores its positions 1..T-1: the logits at position t predict token t+1.
* perplexity: exp(mean negative log-likelihood of the scored tokens);
* KL: per scored position, KL(P_fp16 || P_config) over the vocabulary (nats); mean and 99th percentile;
* top-1 agreement: the fraction of scored positions where both runs' most likely token is the same;
* SQNR per layer: 10 log10(sum x^2 / sum (x - x_hat)^2) over every K (or V) element of the layer that
  went into the cache (x: the float32 value the model produced, after rotation if any) and what the
  cache gave back (x_hat), accumulated over all chunks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """float32 log-probabilities along the last axis (max-subtracted, accumulated in float64)."""
    z = logits - logits.max(axis=-1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=-1, keepdims=True, dtype=np.float64)).astype(np.float32)
    return z - lse


def scored(logits: np.ndarray, tokens) -> tuple[np.ndarray, np.ndarray]:
    """Log-probabilities of positions 0..T-2 and the tokens 1..T-1 they predict."""
    tokens = np.asarray(tokens)
    return log_softmax(logits[:-1]), tokens[1:]


def nll(logp: np.ndarray, targets: np.ndarray) -> np.ndarray:
    return -logp[np.arange(len(targets)), targets].astype(np.float64)


def kl(logp_ref: np.ndarray, logp: np.ndarray) -> np.ndarray:
    """KL(P_ref || P) per row, in nats (float64 accumulation)."""
    return np.sum(np.exp(logp_ref) * (logp_ref - logp), axis=-1, dtype=np.float64)


def sqnr_db(signal: float, noise: float) -> float:
    if noise == 0:
        return math.inf
    if signal == 0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


@dataclass
class Accumulator:
    """Running sums of one configuration over the chunks."""

    n_layers: int
    nll: list = field(default_factory=list)
    kl: list = field(default_factory=list)
    agree: list = field(default_factory=list)
    k_sig: np.ndarray = None
    k_err: np.ndarray = None
    v_sig: np.ndarray = None
    v_err: np.ndarray = None

    def __post_init__(self):
        for name in ("k_sig", "k_err", "v_sig", "v_err"):
            setattr(self, name, np.zeros(self.n_layers))

    def add_kv(self, layer: int, k, k_hat, v, v_hat) -> None:
        self.k_sig[layer] += float(np.sum(np.square(k, dtype=np.float64)))
        self.k_err[layer] += float(np.sum(np.square(k_hat.astype(np.float64) - k)))
        self.v_sig[layer] += float(np.sum(np.square(v, dtype=np.float64)))
        self.v_err[layer] += float(np.sum(np.square(v_hat.astype(np.float64) - v)))

    def add_chunk(self, logp: np.ndarray, targets: np.ndarray, logp_ref: np.ndarray | None) -> None:
        self.nll.append(nll(logp, targets))
        if logp_ref is not None:
            self.kl.append(kl(logp_ref, logp))
            self.agree.append(np.argmax(logp, axis=-1) == np.argmax(logp_ref, axis=-1))

    def summary(self) -> dict:
        nll_all = np.concatenate(self.nll)
        out = {"scored": int(len(nll_all)), "ppl": float(np.exp(nll_all.mean()))}
        if self.kl:
            kl_all = np.concatenate(self.kl)
            out.update(kl_mean=float(kl_all.mean()), kl_p99=float(np.percentile(kl_all, 99)),
                       kl_max=float(kl_all.max()), top1=float(np.concatenate(self.agree).mean()))
        out["k_sqnr_db"] = [sqnr_db(s, e) for s, e in zip(self.k_sig, self.k_err)]
        out["v_sqnr_db"] = [sqnr_db(s, e) for s, e in zip(self.v_sig, self.v_err)]
        out["k_sqnr_db_all"] = sqnr_db(self.k_sig.sum(), self.k_err.sum())
        out["v_sqnr_db_all"] = sqnr_db(self.v_sig.sum(), self.v_err.sum())
        return out
