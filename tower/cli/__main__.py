"""`python -m tower.cli`: what the tests, benches and scripts run, without the entry point."""

from tower.cli import main

raise SystemExit(main())
