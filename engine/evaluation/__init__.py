"""Measuring defenses: detection and false rejection, ROC curves, the side-by-side comparison."""
