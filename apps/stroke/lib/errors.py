"""Turning the project's user-facing errors into HTTP answers the clients can show."""

from contextlib import contextmanager

from fastapi import HTTPException

from strokelabel.errors import StrokeLabelError

# 422 Unprocessable Entity: the request was well formed, the study or label is not usable.
USER_ERROR_STATUS = 422


@contextmanager
def http_errors():
    """Raise a StrokeLabelError inside the block as an HTTP 422 whose detail is its message.

    MONAI Label's endpoints turn any other exception into a bare 500; the 3D Slicer plugin and
    OHIF show the detail text, so the user reads which study and what is wrong with it.
    """
    try:
        yield
    except StrokeLabelError as e:
        raise HTTPException(status_code=USER_ERROR_STATUS, detail=str(e)) from e
