class ConfigError(ValueError):
    """A configuration value or key is wrong; the message names the dotted key."""
