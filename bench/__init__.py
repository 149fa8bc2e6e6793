"""Benchmarks of voicecrm: each area has an entry point that prints its figures.

They print numbers and judge them against the targets the project has set; they
are never timed tests, because a shared two-core machine is too noisy for a
timing assertion to mean anything. `python -m bench` runs the CRM foundation
benchmark (see bench/README.md).
"""
