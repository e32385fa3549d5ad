"""Method networks, built from the plans' standard architecture."""
