"""The contract between the dequantizer's shared frame (``frame.py``) and each format's engine.

The frame takes one input beat (one or more blocks), hands it out ``lanes`` elements at a time,
and in stage 1 registers every block's scale fields -- read by the engine's ``field_rule``, which
also flags the non-finite ones -- and the beat's codes. The engine turns them into output elements
in ``latency`` enabled cycles; its last register is the output value. Engines hold no handshake
logic: every register loads on ``en``, which the frame ties high (its pipeline never stalls and an
output queue takes back-pressure); the frame owns valid bits, the queue and counters.

An engine is a ``wiring.Component`` built as ``Engine(fmt, lanes, elem)`` (the registry's
``BlockFormat.engine``) with:

* ports ``en`` (in), one array port per scale field named as in ``BlockFormat.scale_fields``
  (``d``, ``m``, ``e``: one entry per block of the beat), ``codes`` (in, the stored codes of the
  beat's lanes), ``value`` (out, the element patterns) and ``sat`` (out, lanes saturated to the
  largest finite value). Each is either one wide port (a ``lib.data`` array) or an array of ports
  (``In(shape).array(n)``); the second keeps every lane's logic on nets of its own, which an
  event-driven simulator (Icarus) runs several times faster at 128 lanes (``mx.py``);
* optionally ``code_nan`` (out, combinational from ``codes``): lanes whose code itself reads as NaN
  (mxfp8_e4m3); the frame counts them on every beat;
* attributes ``latency`` (enabled cycles from fields/codes to ``value``) and ``saturates`` (False
  when no result can saturate, e.g. ggml scales into BF16: the frame then builds no counter);
* ``field_rule(m, bits) -> (clean, nonfinite)``: how a raw scale field is read (ggml: FP16 fields,
  Inf/NaN replaced; MX: E8M0, 0xFF is NaN).
"""
