"""Shared state across processes and replicas.

Every piece of shared state (budgets, the response cache) sits behind a Protocol with two
implementations: an in-process one for ``state: memory`` and a Redis one for ``state: redis://...``.
:mod:`modelyard.state.redis` makes the one Redis client they share; :mod:`modelyard.state.lua` holds
the atomic scripts.
"""
