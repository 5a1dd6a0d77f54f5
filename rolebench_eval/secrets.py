"""Keep secrets out of manifests, results, baselines, comparisons, logs and error messages.

API keys are read from the environment and never recorded; this catches the ones that arrive by
other paths: a key inside `--model-args`, credentials inside a URL (user-info or a query string
such as `?api-key=...&sig=...`), a bearer token pasted on the command line.
"""

from __future__ import annotations

import re

# A key=value pair whose key NAME ends in a secret-looking word (`api_key`, `x-api-key`,
# `access_token`, `password`...), the word starting the name or following `_`, `-` or `.`.
# Whole-word matching keeps `max_tokens=`, `tokenizer=` or `monkey=` (traceable settings) intact.
# The bare words `key` and `sig` are too common in prose ("expected KEY=VALUE") to be secrets
# anywhere but in a URL's query string (`?key=`, `&sig=`: Google API keys, Azure SAS signatures).
# The value ends where a query string, a key=value list or a word ends.
_SECRET_WORDS = r"token|secret|password|passwd|pwd|apikey|signature|auth|authorization|credentials?"
_KEY_VALUE = re.compile(
    rf"(?<![\w.-])((?:[\w.-]*[_.-])?(?:{_SECRET_WORDS})|[\w.-]*[_.-](?:key|sig)|(?<=[?&])(?:key|sig))"
    r"=([^&#,;\s\"']*)",
    re.I,
)
_URL_USERINFO = re.compile(r"(\w+://)[^/\s@?#]+@")
_TOKEN = re.compile(r"\b(sk-[A-Za-z0-9_-]{6,}|hf_[A-Za-z0-9]{6,}|Bearer\s+\S+)")
MASK = "***"


def redact(text: str) -> str:
    """The text with secret-looking values replaced by `***`."""
    text = _KEY_VALUE.sub(rf"\1={MASK}", text)
    text = _URL_USERINFO.sub(rf"\1{MASK}@", text)
    return _TOKEN.sub(MASK, text)


def redact_all(data: object) -> object:
    """`redact` applied to every string inside JSON-like data (dicts, lists, tuples)."""
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, dict):
        return {key: redact_all(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [redact_all(value) for value in data]
    return data
