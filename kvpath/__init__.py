"""kvpath: generator of the KV-cache path of an LLM accelerator for the AMD Kria KV260."""

__version__ = "0.1.0"
