"""AutoOptimizer: the autonomous loop that notices and repairs a degrading search platform."""

__version__ = "0.1.0"
