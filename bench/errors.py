"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class AnobenchError(Exception):
    """A problem with the user's input or environment, described in one line.

    Raise it with a message that names the file or option at fault; the CLI prints
    ``error: <message>`` and exits with status 2, never a traceback.
    """


class AnobenchWarning(UserWarning):
    """Something the user should know that does not stop the command (the CLI prints one line)."""
