"""q4_1's datapath for the quantizer: the FP16 units (``q4_1_fp16``) or the BF16 ones (``q4_1_bf16``,
which derive from them). The arithmetic and why it is exact is in those modules' docstrings."""

from amaranth.lib import wiring

from kvpath.config import check_elem
from kvpath.hdl.quant.contract import FormatDatapath
from kvpath.hdl.quant.q4_1_bf16 import CONST_LAYOUT_BF16, Q41Bf16BlockUnit, Q41Bf16LaneUnit
from kvpath.hdl.quant.q4_1_fp16 import CONST_LAYOUT, FMT, Q41BlockUnit, Q41LaneUnit


class Q41Datapath(FormatDatapath):
    fmt = FMT

    def __init__(self, fmt: str = "q4_1", elem: str = "fp16"):
        self.elem = check_elem(elem)
        self.const_layout = CONST_LAYOUT_BF16 if elem == "bf16" else CONST_LAYOUT

    def block_unit(self) -> wiring.Component:
        return Q41Bf16BlockUnit() if self.elem == "bf16" else Q41BlockUnit()

    def lane_unit(self) -> wiring.Component:
        return Q41Bf16LaneUnit() if self.elem == "bf16" else Q41LaneUnit()
