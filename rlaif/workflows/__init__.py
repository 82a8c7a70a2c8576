"""Workflows that chain the stages: `rlaif experiment` and `rlaif iterate`."""
