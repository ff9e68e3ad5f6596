"""From user input to a stored job: parsing URL lists, normalising and validating, abuse limits, submit/cancel/re-run.

Every entry point (the dashboard form, the JSON API, the WebSocket, `manage.py
fetch`) goes through these rules, so a bad line gets the same error everywhere.
"""
