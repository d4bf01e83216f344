"""Issue 14's side-by-side benchmark: `python -m bench.peers` (see bench/peers/__main__.py)."""
