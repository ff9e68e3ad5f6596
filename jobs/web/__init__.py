"""The web interface: HTML pages, the JSON API, WebSocket consumers and what guards them.

Thin views over jobs/submission/ and jobs/queue/: they parse input, call the
core and render; tokens, security headers and the OpenAPI schema live here too.
"""
