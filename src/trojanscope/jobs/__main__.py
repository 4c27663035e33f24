"""``python -m trojanscope.jobs run ID`` (how the scheduler starts a job) and the other ``jobs`` commands."""

from trojanscope.jobs.cli import main

raise SystemExit(main())
