"""Keep secrets out of manifests, results and logs.

API keys are read from the environment and never recorded; this catches the ones that arrive by
other paths: a key inside `--model-args`, credentials inside a URL, a bearer token pasted on the
command line.
"""

from __future__ import annotations

import re

_KEY_VALUE = re.compile(r"((?:api_?key|token|secret|password|auth)[^=,\s]*)=([^,\s]*)", re.I)
_URL_USERINFO = re.compile(r"(\w+://)[^/\s@]+@")
_TOKEN = re.compile(r"\b(sk-[A-Za-z0-9_-]{6,}|hf_[A-Za-z0-9]{6,}|Bearer\s+\S+)")


def redact(text: str) -> str:
    """The text with secret-looking values replaced by `***`."""
    text = _KEY_VALUE.sub(r"\1=***", text)
    text = _URL_USERINFO.sub(r"\1***@", text)
    return _TOKEN.sub("***", text)
