"""Hydra configs of every twist stage (a package so Hydra can find them when twist is installed)."""
