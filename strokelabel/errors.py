"""The one user-facing exception type of the project."""


class StrokeLabelError(ValueError):
    """A problem with a study or a request that the user can fix.

    The message names the study and the problem; the server turns it into an HTTP 422.
    """

    def __init__(self, message: str, study: str | None = None):
        self.study = study
        self.problem = message
        super().__init__(f"{study}: {message}" if study else message)
