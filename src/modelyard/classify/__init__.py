"""The prompt classifier (complexity, tier, task) that the ``auto`` route strategy reads."""
