"""The KV cache in DDR: AXI4 data movers (``writer``, ``reader``), byte gearboxes between blocks and
bus beats (``repack``), and the engine that ties them to the datapaths and the ring trackers
(docs/kvcache.md)."""
