"""`python -m callpolicy.cli`."""

from .commands import main

raise SystemExit(main())
