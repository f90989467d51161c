"""Sandbox enforcement on this host: turning portable intent into bubblewrap, and telling
whether a failed sandboxed process was probably denied."""
