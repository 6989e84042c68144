"""Self-supervised adaptation of a model to a user's own noisy images."""

from slerir_core.adaptation.adapt import (
    AdaptProgress,
    AdaptResult,
    AdaptSettings,
    adapt_model,
    adapt_steps,
    budget_fraction,
)

__all__ = ["AdaptProgress", "AdaptResult", "AdaptSettings", "adapt_model", "adapt_steps", "budget_fraction"]
