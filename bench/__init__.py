"""Side-by-side benchmark: direct TCP, websockify and this proxy (``make bench``)."""
