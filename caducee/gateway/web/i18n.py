"""The webmail's languages: gettext ``.po`` catalogues read with Babel at start-up (H2).

French is the default, English is available. The catalogues are the ``.po`` files under
``locale/<lang>/LC_MESSAGES/messages.po`` (msgids are the English texts), read as they are
with :func:`babel.messages.pofile.read_po` — nothing to compile for ``make run``. A msgid
with no translation shows as itself.

The language of a request: the ``caducee-lang`` cookie (set by the language link), else the
best match of ``Accept-Language``, else French.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from babel.messages.pofile import read_po

LANGUAGES = ("fr", "en")
DEFAULT = "fr"
COOKIE = "caducee-lang"
LOCALE_DIR = Path(__file__).parent / "locale"


@dataclass
class Catalogue:
    """The translations of one language (msgid → text; plural forms by index)."""

    language: str
    messages: dict[str, str] = field(default_factory=dict)
    plurals: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def gettext(self, message: str) -> str:
        return self.messages.get(message) or message

    def ngettext(self, singular: str, plural: str, count: int) -> str:
        forms = self.plurals.get(singular)
        index = 0 if count == 1 else 1  # French: 0 and 1 are singular, handled by the catalogue
        if self.language == "fr":
            index = 0 if count <= 1 else 1
        if forms and len(forms) > index and forms[index]:
            return forms[index]
        return singular if index == 0 else plural


def load(language: str, folder: Path = LOCALE_DIR) -> Catalogue:
    """Read ``folder/<language>/LC_MESSAGES/messages.po``; an empty catalogue if absent."""
    catalogue = Catalogue(language)
    path = folder / language / "LC_MESSAGES" / "messages.po"
    if not path.exists():
        return catalogue
    with path.open("rb") as handle:
        parsed = read_po(handle, locale=language)
    for message in parsed:
        if not message.id:
            continue
        if isinstance(message.id, tuple | list):
            forms = tuple(str(s) for s in message.string) if message.string else ()
            catalogue.plurals[str(message.id[0])] = forms
        elif message.string and not message.fuzzy:
            catalogue.messages[str(message.id)] = str(message.string)
    return catalogue


def load_all(folder: Path = LOCALE_DIR) -> dict[str, Catalogue]:
    """Every language's catalogue, read once when the application is built."""
    return {language: load(language, folder) for language in LANGUAGES}


def negotiate(cookie: str | None, accept_language: str | None) -> str:
    """The language of a request (see the module documentation)."""
    if cookie in LANGUAGES:
        return str(cookie)
    best: tuple[float, str] | None = None
    for position, item in enumerate((accept_language or "").split(",")[:20]):
        tag, _, params = item.strip().partition(";")
        primary = tag.strip().lower().split("-")[0]
        if primary not in LANGUAGES:
            continue
        quality = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                quality = float(params[2:])
            except ValueError:
                quality = 0.0
        if quality <= 0:
            continue
        key = (quality - position * 1e-6, primary)
        if best is None or key[0] > best[0]:
            best = key
    return best[1] if best else DEFAULT
