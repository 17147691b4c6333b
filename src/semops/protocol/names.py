"""What the payer approves is what they see: the rule for payee names and references.

Theory of operation. A payee's display name and a payment reference travel inside the
signed PaymentRequest and are what the PIN prompt shows ("Pay 42.00 EUR to …"). A
signature proves who *sent* a name, not that a person reads it as what it is, so the text
itself must be one a person reads unambiguously (Unicode Technical Standard #39, "Unicode
Security Mechanisms"):

- no invisible or format character: nothing Default_Ignorable (zero-width space and
  joiners, variation selectors, the Hangul fillers U+115F/U+1160/U+3164/U+FFA0) and no
  general category Cf (bidirectional controls, soft hyphen, tag characters U+E0000-E007F,
  which spell hidden text); no blank character that is not a space (U+2800 BRAILLE
  PATTERN BLANK and every character Unicode names a FILLER); no space but U+0020; nothing
  unassigned, private-use or a surrogate;
- at least one letter or digit (a name that is only blanks and marks says nothing);
- a bounded pile of combining marks on each base character, the same mark never twice
  in a row, and no mark without a base (UTS #39 §5.4 "Optional Detection");
- one script, plus Common and Inherited characters (digits, punctuation, spaces,
  combining accents), or one of UTS #39's "Highly Restrictive" combinations: Latin with
  Han, Hiragana and Katakana (Japanese), with Han and Bopomofo, or with Han and Hangul
  (UTS #39 §5.2); digits from one numbering system only.

A name may still pass all this and look like another one written in a single other
script ("Core" spelt with Cyrillic letters). That is what the *skeleton* is for (UTS #39
§4): two names look alike when their skeletons are equal, and a processor refuses a new
merchant name whose skeleton another of its payees already has (`name_key`, indexed).

Data: Unicode properties come from `regex` (General_Category, Default_Ignorable_Code_Point,
kept current with Unicode), scripts and the confusables of confusables.txt from
`confusable-homoglyphs` (Scripts.txt and confusables.txt shipped as data). That package
stores confusables.txt as a symmetric "looks like" relation; since every source of
confusables.txt maps to exactly one prototype and prototypes are never sources, each
group is a star around its prototype and the prototype is recovered here (`_prototype`).
Pure: no I/O beyond the packages' data loaded once, no clock.
"""

from __future__ import annotations

import functools
import unicodedata
from typing import Final

import regex
from confusable_homoglyphs.categories import alias as script_of
from confusable_homoglyphs.confusables import confusables_data

from semops.core.encoding import sha256_b64url
from semops.core.errors import E, SemopsError
from semops.core.limits import COMBINING_MARKS_PER_BASE_MAX, SKELETON_ROUNDS_MAX

# Characters that count for no script: digits, punctuation, spaces, combining accents.
NEUTRAL_SCRIPTS: Final = frozenset({"COMMON", "INHERITED"})
# UTS #39 §5.2 "Highly Restrictive": the script sets besides a single script.
ALLOWED_SCRIPT_SETS: Final = (
    frozenset({"LATIN", "HAN", "HIRAGANA", "KATAKANA"}),
    frozenset({"LATIN", "HAN", "BOPOMOFO"}),
    frozenset({"LATIN", "HAN", "HANGUL"}),
)
TAG_CHARACTERS: Final = range(0xE0000, 0xE0080)

_INVISIBLE: Final = regex.compile(r"[\p{Default_Ignorable_Code_Point}\p{Cf}]")
_UNUSABLE: Final = regex.compile(r"[\p{Cn}\p{Co}\p{Cs}\p{Cc}]")
_SEPARATOR: Final = regex.compile(r"\p{Z}")
_MARK: Final = regex.compile(r"[\p{Mn}\p{Me}]")
_LETTER_OR_DIGIT: Final = regex.compile(r"[\p{L}\p{N}]")
_DECIMAL_DIGIT: Final = regex.compile(r"\p{Nd}")
# The rendered characters in confusables.txt's comments carry left-to-right marks around
# right-to-left text; they are not part of the mapping.
_DIRECTION_MARKS: Final = "\u200e\u200f"
# Distinct display texts whose verdict is remembered (each at most a few hundred bytes).
TEXT_CHECKS_CACHED: Final = 4096


def _is_blank(character: str) -> bool:
    """A character Unicode itself calls a filler or a blank (U+3164 HANGUL FILLER, U+2800
    BRAILLE PATTERN BLANK, ...): it renders as nothing or as a space."""
    name = unicodedata.name(character, "")
    return name.endswith("FILLER") or "BLANK" in name.split()


@functools.lru_cache(maxsize=TEXT_CHECKS_CACHED)
def text_problem(text: str) -> str | None:
    """Why `text` cannot be shown to a payer as a payee name or reference, or None.

    Pure and bounded in length, so the answers are cached: a shop's name and references
    come back with every request and receipt."""
    for character in text:
        if ord(character) in TAG_CHARACTERS:
            return "tag characters (hidden text) are not allowed"
        if _is_blank(character):
            return "filler and blank characters are not allowed"
        if _INVISIBLE.match(character):
            return "invisible and format characters are not allowed"
        if _UNUSABLE.match(character):
            return "unassigned, private-use and control characters are not allowed"
        if _SEPARATOR.match(character) and character != " ":
            return "the only space allowed is the ordinary space"
    if not _LETTER_OR_DIGIT.search(text):
        return "at least one letter or digit is needed"
    return _marks_problem(text) or _digits_problem(text) or _scripts_problem(text)


def _marks_problem(text: str) -> str | None:
    marks: list[str] = []
    base = ""
    for character in unicodedata.normalize("NFD", text):
        if not _MARK.match(character):
            marks, base = [], character
            continue
        if not _LETTER_OR_DIGIT.match(base):
            # On nothing, a space or punctuation a mark draws something that is not in the
            # name's skeleton ("Alpha Bank" + a grave on a trailing space).
            return "a combining mark needs a letter to sit on"
        if marks and marks[-1] == character:
            return "the same combining mark twice on one letter is not allowed"
        marks.append(character)
        if len(marks) > COMBINING_MARKS_PER_BASE_MAX:
            return f"at most {COMBINING_MARKS_PER_BASE_MAX} combining marks on one letter"
    return None


def _digits_problem(text: str) -> str | None:
    # A decimal digit's numbering system is the code point of its zero (U+0030, U+0660...).
    zeros = {ord(c) - unicodedata.decimal(c, 0) for c in text if _DECIMAL_DIGIT.match(c)}
    return "digits from more than one numbering system" if len(zeros) > 1 else None


def _scripts_problem(text: str) -> str | None:
    scripts = {script_of(character) for character in text} - NEUTRAL_SCRIPTS
    if "Unknown" in scripts:
        return "a character of no known script"
    if len(scripts) <= 1 or any(scripts <= allowed for allowed in ALLOWED_SCRIPT_SETS):
        return None
    return "letters from more than one script"


def check_display_text(text: str) -> str:
    """`text` if a payer can read it safely as a payee name or reference, else the
    registry's `name_not_allowed` with the reason (the text itself is never echoed)."""
    problem = text_problem(text)
    if problem is not None:
        raise SemopsError(E.NAME_NOT_ALLOWED, problem)
    return text


# --- skeletons (UTS #39 §4) -----------------------------------------------------------------


@functools.cache
def _links() -> dict[str, frozenset[str]]:
    """confusables.txt as the package stores it: each string -> what it may be taken for."""
    links: dict[str, set[str]] = {}
    for key, entries in confusables_data.items():
        found = links.setdefault(key.strip(_DIRECTION_MARKS), set())
        found.update(entry["c"].strip(_DIRECTION_MARKS) for entry in entries)
    return {key: frozenset(value) for key, value in links.items()}


@functools.cache
def _in_long_prototypes() -> frozenset[str]:
    """Characters inside a prototype of several characters ("rn" for "m"): prototypes
    themselves, since a skeleton maps its own output to itself."""
    return frozenset(c for key in _links() if len(key) > 1 for c in key)


@functools.cache
def _prototype(character: str) -> str:
    """The confusables.txt prototype of one character (itself when it has none).

    A source has exactly one link, its prototype; a prototype links to all its sources.
    A pair of one source and its prototype is told apart by the prototype appearing in
    longer prototypes; failing that the lower code point stands for the pair, which keeps
    equal skeletons equal."""
    links = _links().get(character)
    if not links or len(links) > 1:
        return character
    (other,) = links
    if len(other) > 1 or len(_links().get(other, ())) > 1:
        return other
    if character in _in_long_prototypes():
        return character
    if other in _in_long_prototypes():
        return other
    return min(character, other)


def _skeleton_once(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text)
    return unicodedata.normalize("NFD", "".join(_prototype(c) for c in decomposed))


def skeleton(text: str) -> str:
    """UTS #39 skeleton: NFD, each character to its prototype, NFD again.

    Repeated until nothing changes: the package renders a few prototypes precomposed
    ("ņ" for n + U+0326), whose decomposition maps once more. Two rounds settle every
    code point; the bound only guards against a future data file."""
    current = _skeleton_once(text)
    for _ in range(SKELETON_ROUNDS_MAX):
        following = _skeleton_once(current)
        if following == current:
            break
        current = following
    return current


def name_key(text: str) -> str:
    """What two payee names share when a payer could take one for the other: the digest
    of the skeleton of the name's case-folded skeleton, with its spaces collapsed.

    The skeleton alone keeps case ("C0rner" becomes "COrner", not "corner"), so case is
    folded between two skeletons: "CORNER  CAFÉ", "C0rner Café", "Corner Café" and
    "Corner Café" spelt with a Cyrillic Es and Ie all have one key."""
    folded = skeleton(unicodedata.normalize("NFKC", text)).casefold()
    return sha256_b64url(skeleton(" ".join(folded.split())).encode("utf-8"))


__all__ = ["check_display_text", "name_key", "skeleton", "text_problem"]
