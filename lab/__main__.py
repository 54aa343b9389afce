"""``python -m lab`` is the ``mtplab`` command."""
from lab.cli import main

raise SystemExit(main())
