"""The response cache: exact-match keys, the in-memory store, the Redis store and stream replay."""
