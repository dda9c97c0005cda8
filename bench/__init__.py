"""Benchmarks for extension_fsm: each case timed side by side with its baseline
in the same run, each checking that the work it timed was done right.

Run ``python -m bench`` (writes ``bench/RESULTS.md`` and its plots) or
``python -m bench --quick`` (small sizes, for CI: correctness, not speed).
"""
