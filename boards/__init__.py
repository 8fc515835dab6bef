"""Board flows: everything between "the kvpath Verilog exists" and "the driver talks to a board".

One sub-package per board (``kvpath.boards.kv260``). A board flow reads only the standard library
and its own modules (plus Amaranth for the platform description): the engine's Verilog comes in
as files, the driver's check comes in as a callable, so the pieces that run on the board itself
(programming, the bit-file converter) need nothing else installed.
"""
