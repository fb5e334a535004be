"""metarec behind HTTP: a FastAPI app over a durable feedback store.

``metarec serve RUN`` runs it; :func:`create_app` builds it for tests or for
another ASGI server. The service needs the ``fastapi``, ``uvicorn`` and
``sqlalchemy`` dependencies (installed with metarec).
"""

from metarec.service.settings import ServiceSettings

__all__ = ["ServiceSettings", "create_app", "serve"]


def __getattr__(name: str) -> object:
    # FastAPI and SQLAlchemy load only when the service is used, not on `import metarec`
    if name == "create_app":
        from metarec.service.app import create_app

        return create_app
    if name == "serve":
        from metarec.service.server import serve

        return serve
    raise AttributeError(name)
