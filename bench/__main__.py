"""`python -m bench`: the CRM foundation benchmark, on SQLite and PostgreSQL."""

from bench.cli import main

raise SystemExit(main())
