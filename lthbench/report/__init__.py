"""Stored records, read into a tidy frame, turned into statistics, figures and a self-contained HTML page."""
