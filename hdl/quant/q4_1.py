"""q4_1's datapath for the quantizer: the FP16 units (``q4_1_fp16``) or the BF16 ones (``q4_1_bf16``,
which derive from them). The arithmetic and why it is exact is in those modules' docstrings."""

from kvpath.hdl.quant.contract import UnitTable
from kvpath.hdl.quant.q4_1_bf16 import CONST_LAYOUT_BF16, Q41Bf16BlockUnit, Q41Bf16LaneUnit
from kvpath.hdl.quant.q4_1_fp16 import CONST_LAYOUT, FMT, Q41BlockUnit, Q41LaneUnit


class Q41Datapath(UnitTable):
    fmt = FMT
    units = {
        "fp16": (CONST_LAYOUT, Q41BlockUnit, Q41LaneUnit),
        "bf16": (CONST_LAYOUT_BF16, Q41Bf16BlockUnit, Q41Bf16LaneUnit),
    }
