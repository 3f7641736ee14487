"""Helpers shared by the tests (and, for ``dockerd``, by the benchmarks); no test lives here."""
