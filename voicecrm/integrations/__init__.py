"""Adapters to general outside services (webhooks) that the scenario ports need."""
