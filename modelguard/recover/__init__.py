"""Attacker-side recovery of clean posteriors from defended answers (conf/recover/*.yaml)."""
