"""``dsu serve``: the HTTP service (DESIGN §4).

``dsu.service.app.create_app`` builds the FastAPI app; the job store, queue, result
storage, webhooks and outbound-URL guard each live in their own module here.
"""
