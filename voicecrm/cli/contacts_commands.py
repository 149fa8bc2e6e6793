"""`voicecrm contacts import|export`: CSV in and out of the CRM."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    """Adds the `contacts` command group (CSV import and export arrive with the CSV module)."""
    contacts: argparse.ArgumentParser = sub.add_parser(
        "contacts", help="contacts: CSV import and export"
    )
    contacts.add_subparsers(dest="contacts", required=True)
