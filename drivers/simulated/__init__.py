"""drivers/simulated package."""
