"""Scenario Builder: call flows written in YAML, validated with positions, run by an engine.

A scenario is what a business writes to say how its calls are handled. Its
authors are not programmers, so the format, its error messages (always
file:line:column) and its JSON Schema are as much the product as the engine.
"""
