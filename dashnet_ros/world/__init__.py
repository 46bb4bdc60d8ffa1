"""Procedural predator-prey world (PRED18-style): textured prey, clutter, moving camera."""
