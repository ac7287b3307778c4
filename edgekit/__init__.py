"""edgekit: deploy dynamic (early-exit) neural networks to edge boards."""

__version__ = "0.1.0"
