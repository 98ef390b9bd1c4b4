"""Routing: strategies, circuit breakers, limits, live stats, output validators and the router loop."""
