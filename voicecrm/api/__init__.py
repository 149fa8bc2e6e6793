"""The admin HTTP API under `/api/v1`: declared routes, problem+json errors, OpenAPI 3.1.

A regular package (not a namespace package) so that import-linter, which checks the
import rules in pyproject.toml, and setuptools' package discovery both find it.
"""
