"""The live web view of a lab (issue 17): a read-only page that draws the cluster and its tables
and moves as they change.

    model.py   pure: what each agent answered -> one flat view of the cluster (key -> record)
    diff.py    pure: two views -> a patch and the timeline events that explain it
    feed.py    pure: one browser's pending updates, coalesced per key and bounded
    agents.py  trio: ask each agent over its Unix socket, at a bounded rate
    hub.py     trio: the current view, the recent events, the connected browsers
    app.py     the ASGI app (Starlette): the page, its files, the state, the event stream
    server.py  Hypercorn's trio worker serving the app, beside the poller
"""
