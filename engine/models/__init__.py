"""Face models behind one interface, registered by name.

``load_model("mtcnn" | "buffalo_l", ...)`` builds a :class:`FaceModel`;
``describe_backends()`` tells ``facecut doctor`` what each would use. Sessions are
built only by :func:`make_session` (provider resolution and checks live there).
Never imports PyAV; never needs insightface at run time.
"""

from facecut.models.base import (
    PROVIDERS,
    FaceModel,
    Session,
    backends,
    describe_backends,
    load_model,
    make_session,
    resolve_provider,
)

__all__ = [
    "PROVIDERS",
    "FaceModel",
    "Session",
    "backends",
    "describe_backends",
    "load_model",
    "make_session",
    "resolve_provider",
]
