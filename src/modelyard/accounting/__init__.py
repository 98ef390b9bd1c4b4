"""Accounting: prices and cost, budgets and quotas, usage records and the response cache."""
