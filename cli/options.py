"""Option parsing of the command line: flags, their values and the messages that name them."""

from __future__ import annotations

from engine.detectors import DETECTORS, detector_class
from engine.errors import InputError

# How the command line says the settings an engine message names (engine.errors.SETTING_WORDS).
FLAGS = {
    "scale": "--scale",
    "trust_model": "pass --trust-model",
    "target": "--target",
    "poisoned": "--poisoned",
    "scan": "--scan",
    "clean_data": "--clean PATH",
    "poisoned_data": "--poisoned PATH:TARGET",
    "images": "IMAGE_OR_DIR",
}


def parse_detector_names(text: str, option: str = "--detectors") -> list[str]:
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    if not names:
        raise InputError(None, f"{option} {text!r}: name at least one detector ({', '.join(DETECTORS)})")
    for n in names:
        detector_class(n)
    return list(dict.fromkeys(names))
