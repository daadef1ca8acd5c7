"""Output quantizers applied before a defense (conf/quantize/*.yaml)."""
