"""The dashboard at /ui: server-rendered pages over the same services as the API, with a
little plain script that keeps a cluster's page live from the event stream (no build step).

`pages` holds the routes, `session` the cookie session and CSRF tokens, `timeline` the
geometry of a cluster's timeline; `templates/` and `static/` are what the browser gets.
"""

from ui.pages import router

__all__ = ["router"]
