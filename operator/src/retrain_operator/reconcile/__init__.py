"""Orchestration: the scheduler, observation of metrics and the reconciliation of each policy."""
