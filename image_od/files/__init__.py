"""File helpers: atomic writes and loading a user's files without running code from them."""
