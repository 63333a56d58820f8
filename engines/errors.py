"""The one error type a user can cause; the CLI turns it into a single line."""


class DfscanError(Exception):
    """A problem with the user's input or environment, with what to do about it.

    The message names the file (or option) at fault and the fix; the CLI prints it without a
    traceback and exits non-zero.
    """
