"""Procedural worlds with exact ground truth (training and test data; paper §3.4, PRED18).

- :mod:`.scenes`: domain-randomised high-speed tracking sequences (``render_sequence``);
  seeds >= 1000 train, 0..999 are held out.
- :mod:`.predator_prey`: the predator-prey arena seen from the predator's camera.
- :mod:`.textures`: procedural textures, shapes and textured sprites.
"""
