"""Benchmarks and the realistic event generator they run on (randomness allowed here)."""
