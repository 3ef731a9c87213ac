"""Scaling tools: data-mixture laws (and, to come, FLOPs, MFU and compute scaling fits)."""
