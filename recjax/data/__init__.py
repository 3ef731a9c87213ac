"""Data: readers, the synthetic world generator, per-user sequences, splits and the input pipeline."""
