"""The transcript search box's query language: what it finds, what it refuses, and that nothing typed in it
becomes FTS5 or tsquery syntax."""

from __future__ import annotations

import re

import pytest

from nameplate.desk.search_query import MAX_QUERY_CHARS, MAX_TERMS, SearchQuery, Term, fts5_expression, highlight, parse
from nameplate.errors import NameplateError


def parsed(text: str) -> SearchQuery:
    query = parse(text)
    assert query is not None
    return query


def test_blank_is_no_search() -> None:
    assert parse("") is None and parse("   \t\n") is None


def test_words_phrases_exclusions_and_prefixes() -> None:
    query = parsed('boots  "Tracking number" -refund -"gift card" warrant*')
    assert query.include == (
        Term("boots", ("boots",)),
        Term("Tracking number", ("tracking", "number"), quoted=True),
        Term("warrant*", ("warrant",), prefix=True),
    )
    assert query.exclude == (Term("refund", ("refund",)), Term("gift card", ("gift", "card"), quoted=True))
    assert fts5_expression(query) == '("boots" AND "tracking number" AND "warrant"*) NOT "refund" NOT "gift card"'


def test_a_word_with_punctuation_is_a_phrase_of_its_parts() -> None:
    query = parsed("order#123 ada@example.com")
    assert [term.words for term in query.include] == [("order", "123"), ("ada", "example", "com")]
    # Not quoted: PostgreSQL's parser reads the text as typed (an e-mail address stays one word there).
    assert [term.quoted for term in query.include] == [False, False]
    assert fts5_expression(query) == '("order 123" AND "ada example com")'


def test_a_short_or_multi_word_prefix_is_a_plain_word() -> None:
    assert parsed("a*").include == (Term("a*", ("a",)),)
    assert parsed("foo-ba*").include[0].prefix is False


def test_a_quoted_phrase_stands_in_by_its_longest_part() -> None:
    assert parsed('"my tracking number"').include[0].stand_in() == "tracking"
    assert parsed('"mail ada@example.com"').include[0].stand_in() == "ada@example.com"
    assert parsed('"one"').include[0].quoted is False  # one word: nothing to stand in for


def test_an_unclosed_quote_runs_to_the_end() -> None:
    assert parsed('"boots leak').include == (Term("boots leak", ("boots", "leak"), quoted=True),)


def test_case_and_unicode() -> None:
    query = parsed("Köln GRÜẞE naïve 東京")
    assert [term.words for term in query.include] == [("köln",), ("grüße",), ("naïve",), ("東京",)]


HOSTILE = [
    '"',
    '" OR "',
    "(boots",
    "boots) OR (1=1",
    "NEAR(boots leak, 2)",
    "boots AND OR NOT leak",
    "body:boots",
    "{body}: boots",
    "^boots",
    "boots\\",
    '\\" boots',
    "'; DROP TABLE message; --",
    "boots*)*",
    "\x00boots\x1b[31m",
    "boo\u202ets",  # a right-to-left override inside a word
    "boots:* & !leak | x <-> y",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_input_compiles_to_quoted_words_only(text: str) -> None:
    try:
        query = parse(text)
    except NameplateError as refused:  # nothing searchable in it: said so, as a 400
        assert refused.status == 400
        return
    assert query is not None
    expression = fts5_expression(query)
    # Outside the quotes there is nothing but the operators this module writes.
    outside = re.sub(r'"[^"\W_]*(?: [^"\W_]+)*"\*?', "", expression)
    assert set(outside.replace("AND", "").replace("NOT", "")) <= set("() "), expression
    for term in (*query.include, *query.exclude):
        assert all(re.fullmatch(r"[^\W_]+", word) for word in term.words)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("%", "search for at least one word"),
        ("_ - * ()", "search for at least one word"),
        ("-refund", "leave out"),
        ("x" * (MAX_QUERY_CHARS + 1), "at most"),
        (" ".join(f"w{n}" for n in range(MAX_TERMS + 1)), "at most"),
    ],
)
def test_what_cannot_be_searched_is_a_400_that_says_why(text: str, says: str) -> None:
    with pytest.raises(NameplateError) as raised:
        parse(text)
    assert raised.value.status == 400 and says in raised.value.message


def test_highlight_prefers_the_terms_in_a_row_then_the_earliest() -> None:
    body = "Where is my order #123? It's late."
    assert body[slice(*highlight(body, parsed("ORDER #123")))] == "order #123"  # type: ignore[misc]
    assert body[slice(*highlight(body, parsed("late order")))] == "order"  # type: ignore[misc]
    assert body[slice(*highlight(body, parsed("lat*")))] == "late"  # type: ignore[misc]
    assert highlight(body, parsed("order-less")) is None  # no whole word "less"
    assert highlight("bordering", parsed("order")) is None  # whole words only
