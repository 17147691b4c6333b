"""The only place SQL lives: each service's tables and queries, engines and migrations."""
