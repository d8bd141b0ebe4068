"""Fairness interventions (as opposed to fairness *metrics*, in :mod:`fedsim.metrics`)."""
