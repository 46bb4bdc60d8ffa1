"""Neural trackers: LIF neurons (eq. 1-3), SNN (eq. 4), ANN with attention channel (eq. 5-6)."""
