"""voicecrm: an AI phone receptionist with a CRM built in."""

__version__ = "0.1.0"
