"""calm: CALM (class-anchor probability modelling) for video-text representation learning."""

__version__ = "0.1.0"
