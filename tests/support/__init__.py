"""Helpers for tests that drive real components: a QEMU launcher and a minimal RFB client."""
