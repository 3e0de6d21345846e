"""Benchmarks (run as scripts: ``python benchmarks/<name>.py``); a package so they share helpers by full name."""
