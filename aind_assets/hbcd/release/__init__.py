"""HBCD release staging: spec and QC selection, atomic staging, validity, LORIS summaries."""
