"""`python -m voicecrm` is the same as the `voicecrm` console script."""

from voicecrm.cli.main import main

raise SystemExit(main())
