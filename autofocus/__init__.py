"""autofocus package."""
