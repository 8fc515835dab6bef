"""kvpath's register map: declared once, generated into RTL, C header, JSON and docs.

``kvpath/regmap/map.py`` is the declaration; ``build_map(config)`` resolves it for one build;
``write_all(out_dir, config)`` writes the SystemRDL (validated by compiling it), the C header
(peakrdl-cheader), the JSON map and the markdown page.
"""

from __future__ import annotations

from pathlib import Path

from kvpath.config import DEFAULT, KVPathConfig

from kvpath.regmap.layout import RegisterMap
from kvpath.regmap.map import build_map

FILES = ("kvpath_regs.rdl", "kvpath_regs.h", "kvpath_regs.json", "regmap.md")
DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "regmap.md"


def write_all(out_dir, config: KVPathConfig = DEFAULT) -> list[Path]:
    """Write kvpath_regs.rdl, kvpath_regs.h, kvpath_regs.json and regmap.md into ``out_dir``."""
    from peakrdl_cheader.exporter import CHeaderExporter

    from kvpath.regmap import json_map, markdown, rdl

    regmap = build_map(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rdl_path, h_path, json_path, md_path = (out / name for name in FILES)
    rdl_path.write_text(rdl.rdl_text(regmap))
    root = rdl.compile_rdl(rdl_path, regmap.name)
    CHeaderExporter().export(root, str(h_path))
    json_path.write_text(json_map.dumps(regmap))
    md_path.write_text(markdown.render(regmap))
    return [rdl_path, h_path, json_path, md_path]


def render_doc() -> str:
    """The committed docs/regmap.md: the default configuration's page."""
    from kvpath.regmap.markdown import render

    return render(build_map(DEFAULT))


__all__ = ["FILES", "DOC_PATH", "RegisterMap", "build_map", "render_doc", "write_all"]
