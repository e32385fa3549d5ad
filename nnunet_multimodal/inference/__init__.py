"""Inference-side tools on trained models."""
