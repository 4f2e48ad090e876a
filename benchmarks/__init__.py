"""Reproducible, in-process comparisons of afterward against Starlette and FastAPI.

Run `python benchmarks/run.py` (see `benchmarks/README.md`).
"""
