"""``python -m engine.demo``: rebuild the bundled demo (see :func:`engine.demo.build`)."""

from engine.demo import main

raise SystemExit(main())
