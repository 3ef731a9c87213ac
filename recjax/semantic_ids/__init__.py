"""Semantic IDs: item vectors -> residual codes (RQ-KMeans, RQ-VAE) -> collisions -> prefix trie
-> constrained beam search. Plain arrays in and out; no model, trainer or reader imports."""
