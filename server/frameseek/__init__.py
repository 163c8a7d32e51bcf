"""frameseek: find where images and video clips appear inside a video library."""

__version__ = "0.1.0"
