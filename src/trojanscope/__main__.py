"""``python -m trojanscope`` is the ``trojanscope`` command (what multi-process launchers run:
``accelerate launch -m trojanscope train ...``, ``torchrun -m trojanscope train ...``)."""

from trojanscope.cli import main

raise SystemExit(main())
