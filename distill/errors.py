"""The one exception type for bad user input.

Launch scripts catch it and print its message without a traceback: the message itself must name the
file, field or value at fault and what was expected.
"""


class UserError(Exception):
    """Bad input from the user (path, config, argument): stop with a clear message, exit code 2."""
