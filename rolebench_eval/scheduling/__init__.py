"""Scheduling of model calls: adaptive concurrency per endpoint and cost estimates (issue 9).

Standalone for now: nothing in the runner or the backends imports this package yet.
"""
