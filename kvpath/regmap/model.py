"""Transaction-level model of the register block, built from the JSON map alone.

The cocotb tests compare the RTL against it access by access; it knows the semantics of docs/regmap.md
("Bus behaviour") and nothing about addresses beyond what the JSON says.
"""

from __future__ import annotations

from kvpath.regmap.json_map import RESP

OKAY, SLVERR = RESP["okay"], RESP["slverr"]
WORD_MASK = 0xFFFF_FFFF


def _lane_mask(strb: int) -> int:
    return sum(0xFF << (8 * k) for k in range(4) if strb >> k & 1)


class CSRModel:
    def __init__(self, regmap: dict):
        self.map = regmap
        if regmap["responses"] != RESP or regmap["data_width"] != 32:
            raise ValueError("the model knows 32-bit maps with OKAY/SLVERR codes " + str(RESP))
        self.by_offset = {r["offset"]: r for r in regmap["registers"]}
        self.addr_mask = (1 << regmap["addr_width"]) - 1
        self.axi_error = regmap["special"]["axi_error"]
        self.values: dict[str, int] = {}  # RW fields by port
        self.sticky: dict[str, int] = {}
        self.inputs: dict[str, int] = {}  # live RO inputs and 64-bit counters
        self.snapshot: dict[str, int] = {}
        for r in regmap["registers"]:
            for f in r["fields"]:
                if f["access"] == "rw":
                    self.values[f["port"]] = f["reset"]
                elif f["access"] == "w1c":
                    self.sticky[f["port"]] = 0
                elif f["access"] == "ro" and f["value_from"] is None:
                    self.inputs[f["port"]] = 0
                    if r["part"] == "hi":
                        self.snapshot[f["port"]] = 0
        self.pulses: list[tuple[str, int]] = []  # W1P ports pulsed by writes
        # Beats each write-stream register emitted, by stream port: {"index", "value", "high"}.
        self.streams: dict[str, list[dict]] = {r["stream"]["port"]: [] for r in regmap["registers"] if r["stream"]}

    def _reg(self, name: str) -> dict:
        return next(r for r in self.map["registers"] if r["name"] == name)

    def _port_of(self, name: str) -> str:
        return self._reg(name)["fields"][0]["port"]

    @property
    def scale_writes(self) -> list[tuple[int, int]]:
        return [(beat["index"], beat["value"]) for beat in self.streams.get("scale_write", [])]

    def set_sticky(self, port: str) -> None:
        self.sticky[port] = 1

    def read(self, addr: int) -> tuple[int, int]:
        r = self.by_offset.get(addr & self.addr_mask & ~3)
        if r is None:
            self.sticky[self.axi_error] = 1
            return 0, SLVERR
        value = 0
        for f in r["fields"]:
            port, a = f["port"], f["access"]
            if f["value_from"] is not None:
                v = f["reset"]
            elif r["part"] == "lo":
                v = self.inputs[port] & WORD_MASK
                self.snapshot[port] = self.inputs[port] >> 32
            elif r["part"] == "hi":
                v = self.snapshot[port]
            elif a == "rw":
                v = self.values[port]
            elif a == "ro":
                v = self.inputs[port]
            elif a == "w1c":
                v = self.sticky[port]
            else:
                v = 0
            value |= (v & ((1 << f["width"]) - 1)) << f["lsb"]
        return value, OKAY

    def write(self, addr: int, data: int, strb: int = 0xF) -> int:
        offset = addr & self.addr_mask & ~3
        r = self.by_offset.get(offset)
        if r is None or not r["writable"] or (r["stream"] and strb != 0xF):
            self.sticky[self.axi_error] = 1
            return SLVERR
        if r["stream"]:
            stream, beat = r["stream"], {"value": data}
            if stream["index"]:
                index_port = self._port_of(stream["index"])
                beat["index"] = self.values[index_port]
                self.values[index_port] = (beat["index"] + 1) & WORD_MASK
            if stream["high"]:
                beat["high"] = self.values[self._port_of(stream["high"])]
            self.streams[stream["port"]].append(beat)
            return OKAY
        lanes = _lane_mask(strb)
        for f in r["fields"]:
            mask = ((1 << f["width"]) - 1) << f["lsb"]
            port, a = f["port"], f["access"]
            if a == "rw":
                old = self.values[port] << f["lsb"]
                self.values[port] = ((old & ~lanes | data & lanes) & mask) >> f["lsb"]
            elif a == "w1c" and data & lanes & mask:
                self.sticky[port] = 0
            elif a == "w1p" and data & lanes & mask:
                self.pulses.append((port, 1))
        return OKAY
