"""Secret redaction for traces and logs: API keys, tokens and Authorization headers never leave the process.

Two layers: keys whose name says "secret" (api_key, token, authorization, password, ...) have their values
replaced, and free text is scrubbed of the configured secret values and of well-known key shapes.

`redact` walks its input iteratively and within the `autooptimizer.jsonsafe` limits (its copy is JSON-safe: a
payload nested 1,000 levels deep, a huge int or a lone surrogate is shown as a marker, never raised on), so a
trace can hold whatever an agent sent.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

from autooptimizer.jsonsafe import to_json_safe

MASK = "***REDACTED***"
_SECRET_KEY = re.compile(r"(api[_-]?key|token|secret|password|passwd|authorization|cookie|credential|bearer)", re.I)
_PATTERNS = [
    re.compile(r"(?i)\bBearer\s+[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"\bsk-[A-Za-z0-9_-]{12,}"),
    re.compile(r"\blsv2_[A-Za-z0-9_]{12,}"),
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"),
    re.compile(r"\bxox[abpr]-[A-Za-z0-9-]{10,}"),
    re.compile(r"(?i)((?:api[_-]?key|token|secret|password|authorization)\s*[=:]\s*)([\"']?)[^\s\"',;}]{6,}"),
]
_ENV_SECRETS = ("OPENAI_API_KEY", "LANGSMITH_API_KEY", "LANGCHAIN_API_KEY", "AUTOOPT_API_TOKEN", "AUTOOPT_ARGOCD_TOKEN")


def _known_secrets() -> list[str]:
    """Secret values configured in this process (read each time, so tests and key rotation are honoured)."""
    return sorted({v for k in _ENV_SECRETS if len(v := os.environ.get(k, "")) >= 6}, key=len, reverse=True)


def redact_text(text: str) -> str:
    for secret in _known_secrets():
        text = text.replace(secret, MASK)
    for pat in _PATTERNS:
        keep_prefix = pat.groups >= 2
        text = pat.sub(lambda m, k=keep_prefix: f"{m.group(1)}{m.group(2)}{MASK}" if k else MASK, text)
    return text


def _is_empty(value: Any) -> bool:
    """The values a secret-named key may keep (they reveal nothing): None, "", False and zero."""
    if value is None or isinstance(value, str):
        return not value
    return isinstance(value, bool | int | float) and value == 0


def _secret_key(key: str, value: Any) -> bool:
    return bool(_SECRET_KEY.search(key)) and not _is_empty(value)


def redact(value: Any) -> Any:
    """A JSON-safe copy of `value` with secret-named keys masked and secret-looking text scrubbed."""
    return to_json_safe(value, max_str=65_536, text=redact_text, mask=_secret_key, masked=MASK)


_installed = False


def install_log_redaction() -> None:
    """Scrub every log record (message and args) at creation, whatever handler later prints it."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record stays as it was
            return record
        clean = redact_text(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
