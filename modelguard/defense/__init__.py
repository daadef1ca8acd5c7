"""Defenses: perturbations of the victim's probability vectors (conf/defense/*.yaml)."""
