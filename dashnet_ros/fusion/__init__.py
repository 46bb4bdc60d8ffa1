"""Hybrid blocks: temporal complementary filter (eq. 7-9) and attention (eq. 10-12)."""
