"""The base of the errors synth raises for a user to act on (a missing file, a bad setting, an unprepared model).

The CLI prints these as one line naming what and where, and exits with status 2; anything else is a bug and
keeps its traceback.
"""


class SynthError(Exception):
    """An error whose message says what went wrong and where."""
