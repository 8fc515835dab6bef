"""The machine-readable register map the driver and the tests load (``kvpath_regs.json``)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from kvpath.regmap.layout import DATA_BITS, RegisterMap
from kvpath.regmap.map import AXI_ERROR, ELEM_CODES, FORMAT_CODES, SCALE_DATA, SCALE_INDEX, scale_cache_entries

SCHEMA = "kvpath-regmap/1"
RESP = {"okay": 0, "slverr": 2}  # AXI BRESP/RRESP codes the block returns


def to_dict(regmap: RegisterMap) -> dict:
    config = asdict(regmap.config)
    config["scale_cache_entries"] = scale_cache_entries(regmap.config)
    return {
        "schema": SCHEMA,
        "name": regmap.name,
        "desc": regmap.desc,
        "magic": regmap.magic,
        "version": {"major": regmap.version[0], "minor": regmap.version[1]},
        "data_width": DATA_BITS,
        "addr_width": regmap.addr_width,
        "responses": RESP,
        "config": config,
        "format_codes": FORMAT_CODES,
        "elem_codes": ELEM_CODES,
        "special": {"scale_index": SCALE_INDEX, "scale_data": SCALE_DATA, "axi_error": AXI_ERROR},
        "registers": [
            {
                "name": r.name,
                "offset": r.offset,
                "group": r.group,
                "desc": r.desc,
                "access": r.access,
                "reset": r.reset,
                "writable": r.writable,
                "readable_mask": r.readable_mask,
                "wide": r.wide,
                "part": r.part,
                "stream": None if r.stream is None else {"port": r.stream.port, "index": r.stream.index,
                                                         "high": r.stream.high},
                "fields": [
                    {"name": f.name, "lsb": f.lsb, "width": f.width, "access": f.access,
                     "reset": f.reset, "desc": f.desc, "port": f.port, "value_from": f.value_from}
                    for f in r.fields
                ],
            }
            for r in regmap.registers
        ],
    }


def dumps(regmap: RegisterMap) -> str:
    return json.dumps(to_dict(regmap), indent=1) + "\n"


def load(path: str | Path) -> dict:
    """Load a generated map; refuses files of another schema."""
    data = json.loads(Path(path).read_text())
    if data.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not a kvpath register map of schema {SCHEMA} "
                         f"(found {data.get('schema')!r})")
    return data
