"""The Qt window (see issue 3). Nothing here is imported by engine/."""
