"""The exception hierarchy: every error the package raises on purpose derives from HitlSipError."""

from __future__ import annotations


class HitlSipError(Exception):
    """Base class for errors raised by hitl-sip."""


class ConfigError(HitlSipError):
    """A configuration value is missing or invalid; ``key`` names it (dotted path)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


class SipError(HitlSipError):
    """A SIP-level failure (transport, account, call control)."""


class MediaError(HitlSipError):
    """A media-path failure (ports, codecs, buffers, files)."""


class SignalingError(HitlSipError):
    """A failure on the hub/worker or agent signaling path."""


class SpeechError(HitlSipError):
    """A speech-engine failure; ``retryable`` tells whether a retry may succeed."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable
