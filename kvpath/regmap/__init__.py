"""kvpath's register map: declared once, generated into RTL, C header, JSON and docs."""
