"""The language mechanism both UIs can share: a catalogue of strings per key, the language cookie, the switch's safe redirect.

A missing key in the chosen language falls back to Ukrainian; a key missing
everywhere shows itself (noticed in tests, never a crash).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

LANGUAGES = ("uk", "en")
DEFAULT = "uk"
COOKIE = "mo_lang"


class Catalogue:
    def __init__(self, entries: Mapping[str, Mapping[str, str]]) -> None:
        self.entries = entries

    def translate(self, key: str, lang: str) -> str:
        entry = self.entries.get(key)
        if entry is None:
            return key
        return entry.get(lang) or entry[DEFAULT]

    def translator(self, lang: str) -> Callable[[str], str]:
        lang = lang if lang in LANGUAGES else DEFAULT
        return lambda key: self.translate(key, lang)


def language(cookies: Mapping[str, str]) -> str:
    lang = cookies.get(COOKIE, DEFAULT)
    return lang if lang in LANGUAGES else DEFAULT


def local_path(target: str) -> str:
    """Only a path on this server: browsers drop tabs, newlines and spaces and read a backslash as a slash, so /<tab>/evil is //evil."""
    cleaned = "".join(ch for ch in target if ch.isprintable() and not ch.isspace())
    if not cleaned.startswith("/") or cleaned.startswith("//") or "\\" in cleaned or cleaned != target:
        return "/"
    return cleaned
