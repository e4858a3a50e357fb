"""The edges: SMTP, IMAP and HTTP servers, TLS contexts, DKIM, the outbound relay, the CLI."""
