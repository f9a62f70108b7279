"""What the routes share: the server's state (its models, worker pool and limits), the model a request names, and
the one place a service's exceptions become HTTP answers."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno

from fastapi import HTTPException, Request

from zoo.app.services.pool import Busy, InferencePool, WorkerLost
from zoo.app.services.served import ServedModel
from zoo.app.services.uploads import TooLarge, UnsupportedType

__all__ = ["ServerState", "server_state", "served_model", "http_errors"]


@dataclasses.dataclass(frozen=True)
class ServerState:
    """The application's state (``app.state.server``): ``models`` ``{name: ServedModel}``, the worker ``pool``,
    the upload limit in MiB, whether request folders are kept, the time limit, whether Grad-CAM/SHAP run."""

    models: dict
    pool: InferencePool
    max_upload_mb: float = 512.0
    keep: bool = False
    timeout: float = 120.0
    explain: bool = True


def server_state(request: Request) -> ServerState:
    """The dependency every route takes: the state of the application serving ``request``."""
    return request.app.state.server


def served_model(state: ServerState, name: str, tasks: tuple) -> ServedModel:
    """The served model ``name`` (404 when none is), which must be of one of ``tasks`` (else 400)."""
    if name not in state.models:
        raise HTTPException(404, f"unknown model {name!r}; served: {', '.join(sorted(state.models)) or 'none'}")
    m = state.models[name]
    if m.task not in tasks:
        raise HTTPException(400, f"model {name!r} is a {m.task} model, not {' or '.join(tasks)}")
    return m


@contextlib.contextmanager
def http_errors(timeout: float):
    """Services' exceptions as HTTP answers: a full pool or a worker process lost 503 (retry after 1 s), past
    ``timeout`` 504, an upload over the limit 413, an unsupported file type 415, other bad input (``ValueError``,
    a missing file) 400, the temporary folder's disk full (``ENOSPC``/``EDQUOT``) 507."""
    try:
        yield
    except (Busy, WorkerLost) as e:
        raise HTTPException(503, str(e), headers={"Retry-After": "1"}) from None
    except (asyncio.TimeoutError, TimeoutError):
        raise HTTPException(504, f"the prediction took longer than {timeout:g} s") from None
    except TooLarge as e:
        raise HTTPException(413, str(e)) from None
    except UnsupportedType as e:
        raise HTTPException(415, str(e)) from None
    except (ValueError, FileNotFoundError) as e:
        raise HTTPException(400, str(e)) from None
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise HTTPException(507, "the server's temporary storage is full; the request was not kept, retry later",
                            headers={"Retry-After": "30"}) from None
