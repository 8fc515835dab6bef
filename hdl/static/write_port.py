"""The one write port of the scale constant cache, shared by whoever feeds it.

The register block (single writes through SCALE_INDEX / SCALE_DATA) and the bulk MEMSET path both
produce these; the scale cache consumes them and refuses an index outside its configured size.
``value`` is one cache entry: the scale and its reciprocal as two 16-bit floats of the stream's
element type (FP16 or BF16), ``scale`` in the low half. The driver computes both (see
``kvpath.scales``), so the hardware needs no divider.
"""

from amaranth.lib import data

ScaleWrite = data.StructLayout({"index": 32, "value": 32})
