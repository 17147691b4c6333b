"""What every service shell shares: the web app base, HTTP client, TLS, files, logs."""
