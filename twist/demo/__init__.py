"""``make demo``: the TWIST experiment end to end, offline, on a CPU (see pipeline.py)."""
