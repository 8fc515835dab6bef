"""Amaranth platform for the K26 SOM on the KV260 carrier.

The part is ``xck26-sfvc784-2LV-c``; Amaranth 0.5 maps the ``xck26`` device prefix to the
UltraScale+ family, so its Vivado templates would use the ``{device}-{package}-{speed}`` part string.
The KV260 has no oscillator wired to the PL: the fabric clock is the PS's ``pl_clk0`` (and the reset
``pl_resetn0``), so this platform declares no clock resource and no default clock. The board flow
in this package builds through a Vivado block design (vivado_tcl.py) and uses this class as the one
place where the part and the PL pins are written down.

The only PL pin the board needs is the fan: A12, LVCMOS33, ``fan_en_b`` on the carrier, active low
(Xilinx's KV260 designs drive it from a PWM or hold it low; an undriven pin stops the fan).
Declared with ``PinsN`` so ``fan.o = 1`` means "fan on" whichever way the carrier wires it.
"""

from __future__ import annotations

from amaranth.build import Attrs, PinsN, Resource
from amaranth.vendor import XilinxPlatform

__all__ = ["KV260Platform", "FAN_PIN", "FAN_ATTRS"]

FAN_PIN = "A12"
# SLEW/DRIVE as in Xilinx's own KV260 constraints (kria-base-hardware, Vitis platform XDC).
FAN_ATTRS = {"IOSTANDARD": "LVCMOS33", "SLEW": "SLOW", "DRIVE": "4"}


class KV260Platform(XilinxPlatform):
    device = "xck26"
    package = "sfvc784"
    speed = "2LV-c"
    default_clk = None  # the PL clock comes from the PS (pl_clk0); there is no PL oscillator
    default_rst = None

    resources = [
        Resource("fan", 0, PinsN(FAN_PIN, dir="o"), Attrs(**FAN_ATTRS)),
    ]
    connectors = []

    @property
    def part(self) -> str:
        """The Vivado part string, built the way Amaranth builds it for UltraScale+."""
        return f"{self.device}-{self.package}-{self.speed}"

    def fan_constraints(self) -> tuple[str, dict[str, str], bool]:
        """(pin, attributes, active_low) of the fan resource, for the block-design XDC."""
        res = self.lookup("fan", 0)
        pins = res.ios[0]
        return pins.names[0], dict(res.attrs.items()), pins.invert
