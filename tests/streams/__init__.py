"""Tests of streams/: the IO shell (CLI, replay, broker)."""
