"""fastffnn's benchmarks (``pytest benchmarks --benchmark-only``).  A package so that its
``conftest`` and ``common`` never shadow the modules of the same names under ``tests/``."""
