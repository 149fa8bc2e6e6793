"""The `voicecrm` command line: serve, db, users, tokens, contacts."""
