"""The transcript search box's small query language, parsed here once and compiled for each engine.

    boots leak          both words, in one message (any order)
    "boots leak"        the phrase: these words next to each other, in this order
    -refund  -"gift card"   messages without the word (or phrase); at least one thing to find is needed
    warrant*            a word starting with "warrant" (two letters at least)

Everything else is text: AND, OR, NEAR, parentheses, colons, carets and backslashes are searched as words or
ignored as punctuation, never obeyed. A word is a run of letters and digits, as SQLite's FTS5 (unicode61)
splits text; PostgreSQL's parser splits the same way except that it keeps an e-mail address, a URL or a
hyphenated word whole as well (search for it whole and both engines find it).

Injection is impossible by construction, not by escaping: PostgreSQL receives each term as a bound
parameter of phraseto_tsquery (plain text, no operators), and the FTS5 expression is built from the
extracted words alone, which contain only letters and digits, each inside double quotes.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from nameplate.errors import NameplateError
from nameplate.protocol.vocabulary import ErrorCode

# A query longer than this is not a search a person typed.
MAX_QUERY_CHARS = 200
# Each term is one more index lookup; a dozen is more than a person narrows a search with.
MAX_TERMS = 12
# "a*" would match a good part of the vocabulary: a prefix needs two letters.
MIN_PREFIX_CHARS = 2
# Letters and digits (Unicode): FTS5's unicode61 token characters, without the underscore Python's \w adds.
_WORD = re.compile(r"[^\W_]+")
_NOT_WORD = r"[\W_]+"


@dataclass(frozen=True)
class Term:
    """One thing to find (or to leave out): a word, a quoted phrase, or a prefix."""

    text: str  # as typed, inside quotes for a phrase: what PostgreSQL's parser reads
    words: tuple[str, ...]  # its letters-and-digits runs, lower case: what FTS5 and the highlight use
    prefix: bool = False
    quoted: bool = False

    def stand_in(self) -> str:
        """For an index lookup by single words: the longest space-separated part of a quoted phrase (kept
        whole, so an e-mail address stays one word to PostgreSQL's parser), else the term itself."""
        return max(self.text.split(), key=len) if self.quoted else self.text


@dataclass(frozen=True)
class SearchQuery:
    include: tuple[Term, ...]
    exclude: tuple[Term, ...] = ()


def _clean(text: str) -> str:
    """Control and format characters (NUL, bidi overrides, zero-width joiners) become spaces: never part of
    a word, and a NUL would end the string early on the way to a C library."""
    return "".join(" " if unicodedata.category(c)[0] == "C" else c for c in text)


def _term(raw: str, prefix: bool = False, quoted: bool = False) -> Term | None:
    words = tuple(word.lower() for word in _WORD.findall(raw))
    if not words:
        return None  # punctuation only: nothing either engine could find
    prefix = prefix and len(words) == 1 and len(words[0]) >= MIN_PREFIX_CHARS
    return Term(raw, words, prefix, quoted and len(raw.split()) > 1)


def parse(text: str) -> SearchQuery | None:
    """The query in the search box, or None when it is blank. Raises `invalid` (400) for a query that cannot
    be searched: too long, too many terms, nothing but punctuation, or only exclusions."""
    flat = " ".join(_clean(text).split())
    if not flat:
        return None
    if len(flat) > MAX_QUERY_CHARS:
        raise NameplateError(ErrorCode.invalid, f"a search is at most {MAX_QUERY_CHARS} characters")
    include: list[Term] = []
    exclude: list[Term] = []
    position = 0
    while position < len(flat):
        if flat[position] == " ":
            position += 1
            continue
        negated = flat[position] == "-" and position + 1 < len(flat) and flat[position + 1] != " "
        if negated:
            position += 1
        if flat[position] == '"':
            closing = flat.find('"', position + 1)
            end = len(flat) if closing < 0 else closing  # an unclosed quote runs to the end
            raw, position = flat[position + 1 : end], end + 1
            term = _term(raw, quoted=True)
        else:
            end = flat.find(" ", position)
            end = len(flat) if end < 0 else end
            raw, position = flat[position:end], end
            term = _term(raw, prefix=raw.endswith("*"))
        if term is not None:
            (exclude if negated else include).append(term)
    if len(include) + len(exclude) > MAX_TERMS:
        raise NameplateError(ErrorCode.invalid, f"a search has at most {MAX_TERMS} words or phrases")
    if not include:
        raise NameplateError(
            ErrorCode.invalid,
            "search for at least one word (letters or digits)"
            if not exclude
            else "say what to find as well as what to leave out",
        )
    return SearchQuery(tuple(include), tuple(exclude))


# -- SQLite: an FTS5 MATCH expression ---------------------------------------------------------------------
def _fts5_term(term: Term) -> str:
    # Words hold letters and digits only, so the quotes need no escaping; a quoted string of several words
    # is an FTS5 phrase, and keywords (AND, NEAR) inside quotes are plain words.
    return '"' + " ".join(term.words) + '"' + ("*" if term.prefix else "")


def fts5_expression(query: SearchQuery) -> str:
    expression = "(" + " AND ".join(_fts5_term(term) for term in query.include) + ")"
    for term in query.exclude:
        expression += " NOT " + _fts5_term(term)
    return expression


# -- where a message matched: the highlight -----------------------------------------------------------------
def _pattern(words: tuple[str, ...], prefix: bool) -> re.Pattern[str]:
    # Whole words (no letter or digit on either side), separated by anything that is not one.
    body = _NOT_WORD.join(re.escape(word) for word in words)
    # A prefix highlights the whole word it starts ("warrant*" marks "warranty").
    return re.compile(r"(?<![^\W_])" + body + (r"[^\W_]*" if prefix else r"(?![^\W_])"), re.IGNORECASE)


def highlight(body: str, query: SearchQuery) -> tuple[int, int] | None:
    """Where in `body` to show the match: the terms in a row as typed ("order #123") if they occur so,
    else the earliest of the terms. None if none occurs (the engine's tokens differed from ours)."""
    if len(query.include) > 1 and not any(term.prefix for term in query.include):
        together = _pattern(tuple(word for term in query.include for word in term.words), prefix=False)
        if found := together.search(body):
            return found.span()
    spans = [found.span() for term in query.include if (found := _pattern(term.words, term.prefix).search(body))]
    return min(spans) if spans else None
