"""Prometheus metrics: what operators watch (turn latency first of all).

Each application builds its own registry, so tests and several apps in one
process never share counters; `app.py` serves it at `/metrics`.
"""
