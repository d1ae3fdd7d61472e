"""Board adapters, one module each, found by URL scheme through entry points."""
