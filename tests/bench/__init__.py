"""Tests of bench/: the event generator the benchmarks and the sample log come from."""
