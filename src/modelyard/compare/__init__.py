"""Comparison runs: the same prompts on up to 8 models, graded, summarised and recommended on
(docs/compare.md); every call goes through the one request pipeline."""
