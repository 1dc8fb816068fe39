"""Transcriptions of hand-derived backward passes, one module per derivation."""
