"""BadNet Inspector's engine: everything but the window and the command line, and no Qt.

- ``engine.io``: reading what users have (``datasets``: official-layout HDF5, image files and
  folders; ``models``: Keras 2 HDF5, ``.keras``, CSAW weights-only files) and writing outputs
  atomically (``files``);
- ``engine.scoring``: running a network over faces, batched and cached;
- ``engine.detectors``: per-image detectors (one module each, a registry) and their
  ``calibration`` (thresholds at a false-rejection rate);
- ``engine.scan``: the per-model trigger scan (``margin``, ``trigger_opt``, ``evidence``) and
  ``explain`` (where the network looks);
- ``engine.repairs``: repaired networks (one module each, a registry; ``pruning``, ``training``
  and ``bundle`` are what they share);
- ``engine.evaluation``: ``metrics`` and the side-by-side ``compare``;
- ``engine.workflow``: opening files, verdict rules and the jobs the CLI and the window run;
- ``engine.demo``: the bundled demo, its synthetic ``faces`` and the CSAW-scale ``zoo``;
- ``engine.errors``, ``engine.progress``, ``engine.tf_noise``: what every part uses.

Modules that need TensorFlow import it themselves, so the light ones (``io.datasets``,
``detectors.calibration``, ``evaluation.metrics``) stay fast to import.
"""

import os

# TensorFlow's C++ start-up chatter is noise for our users; real errors still surface.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
