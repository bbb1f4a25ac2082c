from calm.errors import CalmUserError


class ConfigError(CalmUserError, ValueError):
    """A configuration value or key is wrong; the message names the dotted key."""
