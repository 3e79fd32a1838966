"""The one error type the CLI turns into a single line on stderr: a problem the user can fix."""


class UserError(Exception):
    """A bad input or environment problem; its message names the culprit and says what to do."""
