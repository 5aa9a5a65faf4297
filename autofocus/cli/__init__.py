"""autofocus/cli package."""
