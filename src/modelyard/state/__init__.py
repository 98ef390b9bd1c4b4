"""Shared state across processes and replicas.

Every piece of shared state (budgets, the response cache) sits behind a Protocol with two
implementations: an in-process one for ``state: memory`` and a Redis one for ``state: redis://...``.
:mod:`modelyard.state.redis` makes the one Redis client they share; :mod:`modelyard.state.lua` holds
the atomic scripts.  The Redis implementations live in modules of their own
(:mod:`modelyard.accounting.budgets_redis`, :mod:`modelyard.accounting.cache_redis`), imported only
when ``state`` is a Redis URL, so that a single-process gateway never loads redis-py;
:mod:`modelyard.state.errors` holds what both kinds need (URL checks, :class:`StateUnavailableError`).
"""
