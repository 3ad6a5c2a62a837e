"""The engines' error (torch- and numpy-free, so the registry and the commands' argument parsing can
import it without loading either)."""

from common.errors import UserError


class EngineError(UserError):
    """An engine that cannot be loaded or run as asked (missing file, wrong GPU, bad input...)."""
