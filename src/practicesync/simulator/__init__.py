"""PMS simulators: synthetic practices that speak the real formats, deterministic by seed."""
