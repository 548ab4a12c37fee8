"""The one exception type for bad user input.

A `RecamInputError` carries a single line: what is wrong, which path or key, and what to do.
The entry point (`recam.train`) logs it and exits with code 2; every other exception is a bug of
ours and keeps its traceback.
"""


class RecamInputError(Exception):
    """Bad input from the user (missing file, wrong config, corrupt image, mismatched checkpoint)."""
