"""service/routers package."""
