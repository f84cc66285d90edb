"""Thin Hydra entry points: parse the config, call the library, print a clear error."""
