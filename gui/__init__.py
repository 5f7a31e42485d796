"""The Qt window: widgets, and controllers that run the engine in a worker thread. Nothing here is imported by engine/."""
