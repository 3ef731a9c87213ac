"""Pallas (Triton-style) GPU attention kernels for recjax, with XLA references.

See pallas_kernels/README.md. Public entry points:
  pallas_kernels.hstu_attention.hstu_attention / hstu_attention_reference
  pallas_kernels.gdpa.gdpa / seed_pooling_attention / sliding_window_attention
  pallas_kernels.mask.MaskSpec / dense_mask / block_metadata
"""
