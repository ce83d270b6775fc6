"""Kernels and their launchers (one file per backend)."""
