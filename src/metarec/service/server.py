"""Run the service with uvicorn: one worker (the model and the adaptation cache live in
one process), SIGHUP reloads the run without downtime."""

from __future__ import annotations

import logging
import sys

from metarec.service.settings import ServiceSettings


def serve(settings: ServiceSettings, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    import dataclasses

    import uvicorn

    from metarec.service.app import create_app

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    import torch

    torch.set_num_threads(settings.torch_threads)
    settings = dataclasses.replace(settings, install_sighup=True)
    app = create_app(settings)
    store = app.state.store
    print(
        f"metarec: serving {app.state.holder.current.name} on http://{host}:{port}/",
        file=sys.stderr,
    )
    print(f"metarec: feedback store {store.url}", file=sys.stderr)
    if settings.api_key is None:
        print(
            "metarec: WARNING: no API key configured (--api-key or METAREC_API_KEY): "
            "write endpoints accept loopback clients only",
            file=sys.stderr,
        )
    uvicorn.run(app, host=host, port=port, workers=1, log_level="info", access_log=False)
