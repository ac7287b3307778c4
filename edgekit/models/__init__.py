"""Models shipped with edgekit (the demo)."""
