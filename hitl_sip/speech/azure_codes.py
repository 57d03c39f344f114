"""Azure Speech SDK cancellation codes shared by the STT and TTS engines."""

from __future__ import annotations

#: CancellationErrorCode names after which a new stream or request may succeed; the others
#: (AuthenticationFailure, Forbidden, BadRequest, ServiceRedirectPermanent,
#: EmbeddedModelError) will not.
RETRYABLE_CODES = frozenset(
    {
        "ConnectionFailure",
        "ServiceTimeout",
        "ServiceError",
        "ServiceUnavailable",
        "TooManyRequests",
        "RuntimeError",
        "ServiceRedirectTemporary",
    }
)
