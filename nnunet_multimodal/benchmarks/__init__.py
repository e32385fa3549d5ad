"""Benchmarks: speed and memory against plain nnUNetTrainer on the same plans."""
