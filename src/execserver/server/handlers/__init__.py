"""execserver."""
