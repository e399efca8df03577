"""Benchmarks, run as ``python -m tools.bench <subcommand>`` (see ``__main__``).

``journal``: append, read and tail throughput/latency of the journal against the
raw disk rate (:mod:`tools.bench.journal`).
"""
