"""The API's routers: service information and health, separation, jobs.

Each module holds one :class:`fastapi.APIRouter`; :func:`dsu.service.app.create_app`
includes them all. Handlers get what they share through :mod:`dsu.service.deps`.
"""
