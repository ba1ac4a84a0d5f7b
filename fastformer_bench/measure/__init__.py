"""Measurement: timing, memory, work counts and the environment. Each module stands alone."""
