"""BadNet Inspector engine: model and data I/O, scoring, calibration, detectors.

Nothing in this package imports Qt. Modules that need TensorFlow import it
themselves, so the light ones (``data_io``, ``calibration``, ``metrics``) stay
fast to import.
"""

import os

# TensorFlow's C++ start-up chatter is noise for our users; real errors still surface.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
