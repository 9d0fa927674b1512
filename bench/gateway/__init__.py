"""Gateway benchmark: hit overhead against a direct SDK lookup, and miss time to first token."""
