"""``dsu serve``: the HTTP service (DESIGN §4).

``dsu.service.app.create_app`` builds the FastAPI app from the routers in
``dsu.service.routes`` (information and health, separation, jobs) and the pieces they
share (``deps``): the settings, the model catalog, the queue. Each other idea has its own
module here: error answers (``errors``), middleware, uploads, request checks, client-facing
messages, the data dir lock, the job store (``jobs``, ``sqlite_store``), the queue and its
worker (``queue``, ``runner``), result storage, webhooks and the outbound-URL guard.
"""
