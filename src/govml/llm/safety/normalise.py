"""First layer of the prompt guard: undo the disguises that let an attack slip past
rules and classifiers (compatibility forms, invisible characters, look-alike letters,
base64 / hex payloads). The result is only used for checking; the user's text is
what the model receives (or its redaction)."""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache

# Unicode "tag" characters (U+E0020..U+E007E) mirror ASCII and render invisibly: a
# known way to smuggle instructions past a human reviewer. They are decoded, not dropped.
_TAG_FIRST, _TAG_LAST = 0xE0020, 0xE007E
_B64_TOKEN = re.compile(r"(?<![A-Za-z0-9+/=_-])[A-Za-z0-9+/_-]{16,}={0,2}(?![A-Za-z0-9+/=_-])")
_HEX_RUN = re.compile(r"(?:\\x|0x)?[0-9a-fA-F]{2}(?:[\s:,]*(?:\\x|0x)?[0-9a-fA-F]{2}){7,}")
_WORD = re.compile(r"\w+", re.UNICODE)
_MAX_DEPTH = 2


@dataclass(frozen=True)
class NormalisedText:
    """The prompt as checked: NFKC, invisible characters removed, look-alikes folded,
    plus the text of any payload that decoded to readable text."""

    original: str
    text: str
    payloads: tuple[str, ...] = ()
    invisible_removed: int = 0
    homoglyphs_folded: int = 0
    changes: tuple[str, ...] = field(default=())

    @property
    def for_checking(self) -> str:
        """Normalised text followed by the decoded payloads, one per line."""
        return "\n".join((self.text, *self.payloads)) if self.payloads else self.text

    @property
    def obfuscated(self) -> bool:
        """Whether the prompt hid anything (invisible characters, look-alikes, encodings)."""
        return bool(self.payloads or self.invisible_removed or self.homoglyphs_folded)


@lru_cache(maxsize=1)
def _latin_lookalikes() -> dict[str, str]:
    """Map each non-ASCII character that Unicode's confusables list (via the maintained
    ``confusable_homoglyphs`` package) pairs with a single ASCII letter to that letter."""
    from confusable_homoglyphs.confusables import confusables_data

    folds: dict[str, str] = {}
    for char, glyphs in confusables_data.items():
        if len(char) != 1 or char.isascii():
            continue
        letters = [
            g["c"] for g in glyphs if len(g["c"]) == 1 and g["c"].isascii() and g["c"].isalpha()
        ]
        # "І" (Cyrillic) looks like both "l" and "I": keep the letter of the same case
        same_case = [c for c in letters if c.isupper() == char.isupper()]
        if letters:
            folds[char] = (same_case or letters)[0]
    # the list maps some capitals only to a lower-case skeleton ("І" -> "l"); use the
    # fold of their lower-case form instead ("і" -> "i", so "І" -> "I")
    for char, target in list(folds.items()):
        twin = folds.get(char.lower()) if char.isupper() and not target.isupper() else None
        if twin:
            folds[char] = twin.upper()
    return folds


def _strip_invisible(text: str) -> tuple[str, str, int]:
    """Remove format characters (zero-width, bidi controls, BOM); return the text, the
    ASCII hidden in tag characters, and how many characters were removed."""
    kept: list[str] = []
    hidden: list[str] = []
    removed = 0
    for char in text:
        code = ord(char)
        if _TAG_FIRST <= code <= _TAG_LAST:
            hidden.append(chr(code - 0xE0000))
            removed += 1
        elif unicodedata.category(char) == "Cf":
            removed += 1
        else:
            kept.append(char)
    return "".join(kept), "".join(hidden), removed


def fold_homoglyphs(text: str) -> tuple[str, int]:
    """Replace look-alike letters by their ASCII twin inside words that mix them with
    ASCII letters, or in any word when most letters of the text are ASCII, so that a
    Russian or Greek prompt is left alone but "іgnоrе" (Cyrillic) becomes "ignore"."""
    folds = _latin_lookalikes()
    letters = [c for c in text if c.isalpha()]
    mostly_ascii = bool(letters) and sum(c.isascii() for c in letters) * 2 > len(letters)
    count = 0

    def fold(match: re.Match[str]) -> str:
        nonlocal count
        word = match.group(0)
        if word.isascii() or not (mostly_ascii or any(c.isascii() and c.isalpha() for c in word)):
            return word
        out = "".join(folds.get(c, c) for c in word)
        count += sum(a != b for a, b in zip(word, out, strict=True))
        return out

    return _WORD.sub(fold, text), count


def _readable(raw: bytes) -> str | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    stripped = text.strip()
    if len(stripped) < 6:
        return None
    printable = sum(c.isprintable() or c in "\n\t" for c in stripped)
    letters = sum(c.isalpha() or c == " " for c in stripped)
    if printable < 0.95 * len(stripped) or letters < 0.6 * len(stripped):
        return None
    return stripped


def _decode_base64(token: str) -> str | None:
    body = token.rstrip("=")
    padded = body + "=" * (-len(body) % 4)
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            raw = decode(padded)
        except (binascii.Error, ValueError):
            continue
        text = _readable(raw)
        if text is not None:
            return text
    return None


def _decode_hex(run: str) -> str | None:
    digits = re.sub(r"\\x|0x|[\s:,]", "", run)
    if len(digits) % 2:
        return None
    try:
        return _readable(bytes.fromhex(digits))
    except ValueError:
        return None


def decode_payloads(text: str, *, depth: int = _MAX_DEPTH) -> list[str]:
    """Readable text hidden in base64 or hex runs of ``text`` (nested up to ``depth``)."""
    found: list[str] = []
    for match in _HEX_RUN.finditer(text):
        decoded = _decode_hex(match.group(0))
        if decoded is not None:
            found.append(decoded)
    for match in _B64_TOKEN.finditer(text):
        token = match.group(0)
        if re.fullmatch(r"[0-9a-fA-F]+", token):
            continue  # plain hex is handled above
        decoded = _decode_base64(token)
        if decoded is not None:
            found.append(decoded)
    if depth > 1:
        for item in list(found):
            found.extend(decode_payloads(item, depth=depth - 1))
    return found


def normalise(text: str) -> NormalisedText:
    """Run every normalisation step on ``text`` and record what each one changed."""
    if not isinstance(text, str):
        raise TypeError("normalise() takes a string")
    changes: list[str] = []
    nfkc = unicodedata.normalize("NFKC", text)
    if nfkc != text:
        changes.append("nfkc")
    visible, hidden, removed = _strip_invisible(nfkc)
    if removed:
        changes.append("invisible")
    folded, n_folded = fold_homoglyphs(visible)
    if n_folded:
        changes.append("homoglyphs")
    payloads = decode_payloads(folded)
    if hidden.strip():
        payloads.insert(0, hidden.strip())
    if payloads:
        changes.append("payload")
    return NormalisedText(
        original=text,
        text=folded,
        payloads=tuple(dict.fromkeys(payloads)),
        invisible_removed=removed,
        homoglyphs_folded=n_folded,
        changes=tuple(changes),
    )
