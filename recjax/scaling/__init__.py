"""Scaling tools: FLOPs (`flops`), MFU (`mfu`), compute scaling-law fits (`fits`), data-mixture laws."""
