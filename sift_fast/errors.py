"""Error types: a UserError is reported as one line on stderr with exit code 2."""


class UserError(Exception):
    """Bad input from the user (flags, config, files). Reported without a traceback."""


class ConfigError(UserError):
    """An invalid or contradictory configuration."""


class DataError(UserError):
    """A corpus, tokenizer or vocab that cannot be used."""


class TrainingHalted(Exception):
    """Training stopped on non-finite losses or gradients (``--nan-policy``): one line, exit code 3."""
