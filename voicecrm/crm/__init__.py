"""The CRM domain: contacts, phones, notes, stages, tags, the timeline, merge and CSV.

Functions here take an `AsyncSession` and an `Actor` and never commit: the edge
that called them (an API request, a call event, a CLI command) owns the unit of
work. Nothing here knows of HTTP, carriers or language models.
"""
