"""Searching many forms in many texts at once.

A batch of texts (the cells of a batch of rows, the lines of a log) is joined into one
string, once as written and once lower-cased, so each form costs one `str.find` pass over
the batch instead of one per text; a hit is mapped back to its text by bisection and
then held to the form's boundary rule. Pure: no I/O.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Final

from semops.privacy.encodings import Form, jose_tokens

_SEPARATOR: Final = "\x00"  # never inside a searched form, and a boundary for every rule
# JOSE tokens inside decoded JOSE payloads are opened this deep (a PaymentOrder carries its
# PaymentRequest; nothing in the protocol nests deeper).
JOSE_DEPTH_MAX: Final = 3


@dataclass(frozen=True, slots=True)
class Place:
    """Where a text is: "bank-a.db inbound_transfers.payer_ref row 3", "logs/x.log:17"."""

    where: str
    via: str | None = None  # "JWS payload", "JWS header" when found inside a token
    payee_side: bool = False


@dataclass(frozen=True, slots=True)
class Hit:
    place: Place
    encoding: str


@dataclass
class TokenCounts:
    decoded: int = 0
    opaque: int = 0


@dataclass
class Corpus:
    """Texts searched together. Add texts, then search forms."""

    texts: list[str] = field(default_factory=list)
    places: list[Place] = field(default_factory=list)
    tokens: TokenCounts = field(default_factory=TokenCounts)
    _joined: tuple[str, str, list[int]] | None = None

    def add(self, text: str, place: Place, *, open_tokens: bool = True) -> None:
        """A text, and the decoded header and payload of every JWS inside it."""
        self._joined = None
        self.texts.append(text)
        self.places.append(place)
        if open_tokens and "eyJ" in text:
            self._add_tokens(text, place, depth=1)

    def _add_tokens(self, text: str, place: Place, depth: int) -> None:
        for token in jose_tokens(text):
            if token.kind == "JWE":
                self.tokens.opaque += 1
                continue
            self.tokens.decoded += 1
            for part, decoded in zip(("JWS header", "JWS payload"), token.texts, strict=True):
                via = part if place.via is None else f"{place.via} > {part}"
                inner = Place(place.where, via, place.payee_side)
                self.texts.append(decoded)
                self.places.append(inner)
                if depth < JOSE_DEPTH_MAX and "eyJ" in decoded:
                    self._add_tokens(decoded, inner, depth + 1)

    def __len__(self) -> int:
        return len(self.texts)

    def _join(self) -> tuple[str, str, list[int]]:
        if self._joined is None:
            starts: list[int] = []
            position = 0
            for text in self.texts:
                starts.append(position)
                position += len(text) + len(_SEPARATOR)
            lowered = [text.lower() for text in self.texts]
            if any(len(a) != len(b) for a, b in zip(lowered, self.texts, strict=True)):
                # Lower-casing changed a length (rare letters): keep offsets comparable.
                lowered = [
                    low if len(low) == len(text) else text
                    for low, text in zip(lowered, self.texts, strict=True)
                ]
            self._joined = (_SEPARATOR.join(self.texts), _SEPARATOR.join(lowered), starts)
        return self._joined

    def search(self, form: Form) -> list[Hit]:
        """The places where a form occurs (each place once), with the encoding found."""
        raw, lowered, starts = self._join()
        haystack, needle = (lowered, form.text.lower()) if form.fold else (raw, form.text)
        hits: list[Hit] = []
        seen: set[int] = set()
        position = haystack.find(needle)
        while position >= 0:
            index = bisect.bisect_right(starts, position) - 1
            if index not in seen and form.matches_at(haystack, position):
                seen.add(index)
                exact = not form.fold or form.text in self.texts[index]
                encoding = form.encoding if exact else f"{form.encoding}, other case"
                hits.append(Hit(self.places[index], encoding))
            position = haystack.find(needle, position + 1)
        return hits


__all__ = ["JOSE_DEPTH_MAX", "Corpus", "Hit", "Place", "TokenCounts"]
