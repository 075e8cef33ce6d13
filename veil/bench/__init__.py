"""Benchmarks. Each module exposes ``main(json_stdout, output, quick)`` that prints a table
and writes JSON; ``bench/<name>.py`` scripts and ``veil bench <name>`` call it."""
