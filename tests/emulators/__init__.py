"""Controller emulators for the serial driver tests."""
