"""Evaluation: `rlaif compare`, agreement with human labels, statistics, ratings, reports, figures."""
