"""Repeated questions: masking, greetings, the clustering itself, and paraphrases with the real model."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest

from nameplate.insight.topics import (
    LexicalEmbedder,
    Question,
    average_linkage,
    cluster,
    count_previous,
    mask,
    question_of,
    semantic_available,
)

DAY = date(2026, 12, 1)


def q(n: int, text: str, day: date = DAY) -> Question:
    moment = datetime(day.year, day.month, day.day, 9, tzinfo=UTC) + timedelta(minutes=n)
    question = question_of(text)
    assert question is not None
    return Question(f"c{n}", moment, day, question)


def test_personal_data_and_numbers_become_placeholders() -> None:
    assert mask("Order #11423 for ann.lee+shop@mail.example, call +44 20 7946 0958") == (
        "Order <number> for <email>, call <phone>"
    )
    assert question_of("Hi there! Hello, where is order 1142?") == "where is order <number>"
    assert question_of("hello!!") is None
    assert question_of("Thanks") is None
    assert question_of("Hi, 12345") is None  # a bare number is no question


def test_average_linkage_matches_scipy_on_random_points() -> None:
    hierarchy = pytest.importorskip("scipy.cluster.hierarchy")
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(60, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ours = average_linkage(vectors, 0.8)
    distances = np.clip(1.0 - vectors.astype(np.float64) @ vectors.T.astype(np.float64), 0, None)
    condensed = distances[np.triu_indices(60, 1)]
    labels = hierarchy.fcluster(hierarchy.linkage(condensed, "average"), 0.8, "distance")
    theirs = sorted(sorted(int(i) for i in np.flatnonzero(labels == label)) for label in set(labels))
    assert sorted(ours) == theirs
    assert 1 < len(ours) < 60  # the threshold cut somewhere in the middle


def test_lexical_clusters_are_deterministic_and_attach_later_days() -> None:
    monday = [
        q(1, "Where is my order 1142?"),
        q(2, "where is my order #2231"),
        q(3, "Do you ship to Canada?"),
        q(4, "Hello! Where's my order 77710"),
    ]
    tuesday = [
        q(5, "where is my order 5512", DAY + timedelta(days=1)),
        q(6, "Do you ship to canada", DAY + timedelta(days=1)),
    ]
    embedder = LexicalEmbedder()
    topics = cluster(monday + tuesday, embedder)
    again = cluster(monday + tuesday, embedder)
    assert [[x.conversation_id for x in t.questions] for t in topics] == [
        [x.conversation_id for x in t.questions] for t in again
    ]
    orders = topics[0]
    assert {x.conversation_id for x in orders.questions} >= {"c1", "c2", "c5"}
    assert "order <number>" in orders.representative
    assert len(orders.examples) == 3 and len({e.conversation_id for e in orders.examples}) == 3
    shipping = next(t for t in topics if "c3" in {x.conversation_id for x in t.questions})
    assert {x.conversation_id for x in shipping.questions} == {"c3", "c6"}  # Tuesday's joined Monday's
    count_previous(topics, [q(9, "where is my order 1", DAY - timedelta(days=7))], embedder)
    assert (orders.previous_count, orders.trend) == (1, orders.count - 1)


PARAPHRASES = {
    "delivery": [
        "where is my order",
        "my package still hasn't arrived",
        "order 1142 not delivered yet",
        "Hi, has my parcel been shipped? It's been a week",
    ],
    "returns": ["how do I return a tent", "can I send back the boots I bought", "what is your return policy"],
    "hours": ["what are your opening hours", "when is the shop open on sunday"],
}


@pytest.mark.skipif(
    not semantic_available() and os.environ.get("CI") != "true", reason="the nameplate[topics] extra is not installed"
)
def test_paraphrases_land_together_with_the_sentence_embedder() -> None:
    from nameplate.insight.topics import default_embedder

    embedder = default_embedder()
    assert embedder.name == "semantic"
    questions, truth = [], {}
    for topic, texts in PARAPHRASES.items():
        for text in texts:
            question = q(len(questions), text)
            questions.append(question)
            truth[question.conversation_id] = topic
    topics = cluster(questions, embedder)
    found = [{truth[x.conversation_id] for x in t.questions} for t in topics]
    assert all(len(kinds) == 1 for kinds in found), found  # no cluster mixes two questions
    delivery = next(t for t in topics if truth[t.questions[0].conversation_id] == "delivery")
    assert {x.text for x in delivery.questions} >= {
        "where is my order",
        "my package still hasn't arrived",
        "order <number> not delivered yet",
    }
