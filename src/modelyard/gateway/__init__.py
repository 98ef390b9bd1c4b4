"""The gateway: one request pipeline and the services it uses, behind every front end (HTTP, SDK)."""
