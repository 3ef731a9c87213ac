"""Metrics: plain functions of scores, ranks and labels (no model, no reader)."""
