"""Runs collected into frames, tuning picks, targets read exactly, figures."""
