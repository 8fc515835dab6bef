"""The ggml block formats (q8_0, q4_0, q4_1): the spec in integer arithmetic, byte-identical to gguf."""
