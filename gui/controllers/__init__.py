"""The window's state, in small controllers without widgets: data, calibration, image check,
detector comparison and fine-pruning. Each runs engine workflow generators in the session's
job runner and tells widgets what changed through its signals."""
