"""The one exception type for a user's mistake."""


class MamaError(Exception):
    """A user's mistake (a missing path, a bad file, a wrong checkpoint).

    The message is one line that names the file and says how to fix it. The CLI prints it
    without a traceback and exits with status 2. Raise it only after cleaning up anything
    half-written.
    """
