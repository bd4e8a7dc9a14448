"""`IntentClassifier` by nearest examples: cosine similarity between embeddings.

`setup()` embeds every intent example and FAQ question once; build one classifier per map and
share it between calls (it keeps no per-call state). An intent's score is the best cosine
between the caller's text and any of its examples (max, not a top-k mean: on the held-out
paraphrases of the example map max was as accurate or better, and a top-k mean punishes intents
whose examples are deliberately varied, which is how examples should be written). The vector
side (unit vectors, cosine, the inverted index over sparse examples) is
`orchestrator.intents.nearest`; this module is the rules that turn those scores into a decision.

Entity evidence: an intent that declares entities gets `ENTITY_BONUS` added when one of them is
found in the text ("давайте на субботу" names a day, so it is `choose_day`, not `agree`, although
"давайте" is an `agree` example; "55 кв м" carries a number for `give_area`). On the example
map's held-out set it took intents from 40/44 to 43/44 at the cost of one off-script question
("а какая завтра погода") now read as `choose_day`.

FAQ precedence: a text closer to a FAQ entry's questions than to any intent's examples (the
entity bonus left aside) is a question, not an intent: "сколько стоит удалить зуб" names the
surgeon's service, so `choose_doctor` gets the entity bonus, but it asks the price. When the best
FAQ score clears `settings.faq_threshold` and beats every intent's score before the bonus,
`classify_intent` returns no result (the leader is still reported) and the dialogue goes on to
the FAQ. The bonus decides between intents, never between an intent and a question.
`route_label` is that decision as a pure function, shared with the map lint.

Three more rules of evidence (chosen on the dev sets, tests/test_heldout.py): an entity found
for one intent also takes `ENTITY_BONUS` off every intent that takes no entity ("да на 25е" is a
day, not a bare "да"); a question word (`lexicon.QUESTION_WORDS`: "откуда у вас мой номер")
takes `QUESTION_PENALTY` off every intent none of whose examples asks one (a question is no
answer or request; a request said beside it, "откуда у вас мой номер, удалите его", still
clears the threshold); and a decision word (`lexicon.DECISIVE_CONCEPTS`: "дороговато, пожалуй
откажусь") turns FAQ precedence off, so the intent is not taken for the question it names.

Fourth tuning (dev set 4): "вы" with a present-tense "вы" verb ("вы имплантацию делаете") asks
like a question word; a decision word (`lexicon.DECISIVE_CONCEPTS`: "давайте отменим") adds
`ENTITY_BONUS` to the intents whose examples say one and takes it off the rest; an affirming word
(`lexicon.AFFIRMING_LEMMAS`: "да, в 10, всё верно") keeps the entity bonus off, as the date or
time beside it only repeats what the bot said.

Fifth tuning (dev sets 5 and 6): a FAQ entry loses `TOPIC_PENALTY` when the text asks about
something its questions never speak of (`orchestrator.intents.topics`): a duration or a noun
counted by "сколько" ("сколько по времени", "сколько человек приедет"), or the object of a yes/no
question about the callee's work ("а химчистку дивана вы делаете"). The penalty also keeps such
a question under the constrained step's `min_score`, so it goes to the free LLM answer.

Stability: `previous_leader` (the leader of the previous partial or turn) stays the leader when
its score is within `STICKY_MARGIN` of the best, so two near-tied intents do not flip-flop between
partials. The result is returned only when the leader's score reaches
`settings.intent_threshold`; the leader is returned regardless, for the Orchestrator's checks.
"""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.dialogue_map.models import DialogueMap
from orchestrator.domain.models import FaqAnswer, IntentResult
from orchestrator.intents.embedder import Embedder, SparseEmbedder
from orchestrator.intents.entities import extract_entities
from orchestrator.intents.lexicon import AFFIRMING_LEMMAS, DECISIVE_CONCEPTS, asks, concept
from orchestrator.intents.morphology import analyzer, lemma
from orchestrator.intents.nearest import SparseIndex, Vector, dot, unit
from orchestrator.intents.ngram import CharNgramEmbedder
from orchestrator.intents.topics import closed_objects, topics, vocabulary
from orchestrator.text import normalize

STICKY_MARGIN = 0.03
ENTITY_BONUS = 0.15
QUESTION_PENALTY = 0.15
TOPIC_PENALTY = 0.3


def intent_label(intent_id: str) -> str:
    """The label of an intent among the arbiter's options and in `label_scores`."""
    return f"intent:{intent_id}"


def faq_label(faq_id: str) -> str:
    """The label of a FAQ entry among the arbiter's options and in `label_scores`."""
    return f"faq:{faq_id}"


def example_groups(dialogue_map: DialogueMap) -> list[list[str]]:
    """Each intent's examples and each FAQ entry's questions (for `CharNgramEmbedder.fitted`).

    A digit-string intent (some state's `collect_digits.intent`) is left out: it is recognised by
    its digits (`orchestrator.digit_keys`), and its few word examples ("мой номер") must not
    reweigh the features that tell the worded intents apart.
    """
    keyed = {s.collect_digits.intent for s in dialogue_map.states.values() if s.collect_digits is not None}
    groups = [list(i.examples) for iid, i in dialogue_map.intents.items() if iid not in keyed]
    return groups + [list(f.questions) for f in dialogue_map.faq.values()]


def route_label(
    intent_raw: dict[str, float],
    intent_scores: dict[str, float],
    faq_scores: dict[str, float],
    *,
    intent_threshold: float,
    faq_threshold: float,
) -> str | None:
    """Where the classifier sends a text, state transitions aside: "intent:<id>", "faq:<id>" or None.

    `intent_raw` are the intents' scores before the entity bonus, `intent_scores` after it (see
    the module docstring: FAQ precedence, then the intent over its threshold, then the FAQ).
    """
    faq_best = max(faq_scores, key=faq_scores.__getitem__) if faq_scores else None
    faq_score = faq_scores[faq_best] if faq_best is not None else 0.0
    if (
        faq_best is not None
        and faq_score >= faq_threshold
        and faq_score > max(intent_raw.values(), default=0.0)
    ):
        return faq_label(faq_best)
    if intent_scores:
        leader = max(intent_scores, key=intent_scores.__getitem__)
        if intent_scores[leader] >= intent_threshold:
            return intent_label(leader)
    if faq_best is not None and faq_score >= faq_threshold:
        return faq_label(faq_best)
    return None


# "вы ... делаете": a verb of the callee's trade asked about ("вы имплантацию делаете", "вы по
# выходным работаете"), not the modals a request is said with ("вы можете соединить").
_MODAL_LEMMAS = frozenset({"мочь", "хотеть"})


def asks_what_you_do(words: Sequence[str]) -> bool:
    """Whether `words` ask "вы" what they do: "вы" with a present-tense "вы" verb (no modal)."""
    if "вы" not in words:
        return False
    for w in words:
        tag = analyzer().parse(w)[0].tag
        if (
            tag.POS == "VERB"
            and {"plur", "2per", "pres", "indc"} in tag
            and lemma(w).normal_form not in _MODAL_LEMMAS
        ):
            return True
    return False


def faq_first(intent_raw: dict[str, float], faq_scores: dict[str, float], faq_threshold: float) -> bool:
    """Whether a FAQ entry takes precedence over every intent (see the module docstring)."""
    best = max(faq_scores.values(), default=0.0)
    return best >= faq_threshold and best > max(intent_raw.values(), default=0.0)


class VectorIntentClassifier:
    """Intent and FAQ lookup over one map's examples (see the module docstring)."""

    def __init__(
        self, dialogue_map: DialogueMap, embedder: Embedder, *, entity_bonus: float = ENTITY_BONUS
    ) -> None:
        self._map = dialogue_map
        self._embedder = embedder
        self._entity_bonus = entity_bonus
        self._intent_vectors: dict[str, list[Vector]] = {}
        self._faq_vectors: dict[str, list[Vector]] = {}
        self._index: dict[int, SparseIndex] = {}  # by id() of the table above it indexes
        self._asking_intents: frozenset[str] = frozenset(
            iid for iid, i in dialogue_map.intents.items() if any(self._asks(e) for e in i.examples)
        )
        self._deciding_intents: frozenset[str] = frozenset(
            iid for iid, i in dialogue_map.intents.items() if any(self.decides(e) for e in i.examples)
        )
        self._faq_vocabulary: dict[str, frozenset[str]] = (
            {fid: vocabulary(f.questions, embedder) for fid, f in dialogue_map.faq.items()}
            if isinstance(embedder, CharNgramEmbedder)
            else {}
        )
        self._ready = False

    @property
    def embedder_name(self) -> str:
        """The embedder's name, for the metrics."""
        return self._embedder.name

    async def _embed(self, texts: Sequence[str]) -> list[Vector]:
        if isinstance(self._embedder, SparseEmbedder):
            return list(self._embedder.embed_sparse(texts))
        return [unit(v) for v in await self._embedder.embed(texts)]

    async def setup(self) -> None:
        """Embed every intent example and FAQ question (one batch). Idempotent."""
        if self._ready:
            return
        owners: list[tuple[dict[str, list[Vector]], str]] = []
        texts: list[str] = []
        for iid, intent in self._map.intents.items():
            for ex in intent.examples:
                owners.append((self._intent_vectors, iid))
                texts.append(ex)
        for fid, faq in self._map.faq.items():
            for q in faq.questions:
                owners.append((self._faq_vectors, fid))
                texts.append(q)
        if isinstance(self._embedder, CharNgramEmbedder):
            self._embedder = self._embedder.fitted(example_groups(self._map))
        vectors = await self._embed(texts) if texts else []
        for (table, owner), vec in zip(owners, vectors, strict=True):
            table.setdefault(owner, []).append(vec)
        for table in (self._intent_vectors, self._faq_vectors):
            if all(isinstance(v, dict) for vs in table.values() for v in vs):
                self._index[id(table)] = SparseIndex(table)
        self._ready = True

    def _best(self, vec: Vector, table: dict[str, list[Vector]]) -> dict[str, float]:
        index = self._index.get(id(table))
        if index is not None and isinstance(vec, dict):
            return index.best(vec)
        # min(): a text equal to an example as a bag of words scores 1 up to rounding
        return {owner: min(1.0, max(dot(vec, v) for v in vs)) for owner, vs in table.items()}

    def _faq_scores_of(self, text: str, vec: Vector) -> dict[str, float]:
        """Each FAQ entry's score; `TOPIC_PENALTY` off an entry whose questions never speak of
        what the text asks about (`orchestrator.intents.topics`, see the module docstring)."""
        scores = self._best(vec, self._faq_vectors)
        if not isinstance(self._embedder, CharNgramEmbedder):
            return scores
        tokens = self._embedder.tokens(text)
        asked = topics(tokens) | closed_objects(tokens)
        if asked:
            for fid in scores:
                if not asked <= self._faq_vocabulary.get(fid, frozenset()):
                    scores[fid] = max(0.0, scores[fid] - TOPIC_PENALTY)
        return scores

    def _intent_scores_of(self, text: str, vec: Vector) -> dict[str, float]:
        return self._with_bonus(text, self._best(vec, self._intent_vectors))

    def _with_bonus(self, text: str, raw: dict[str, float]) -> dict[str, float]:
        scores = dict(raw)
        if self._entity_bonus and not self._affirms(text):
            found = False
            for iid, intent in self._map.intents.items():
                if (
                    intent.entities
                    and iid in scores
                    and extract_entities(text, intent.entities, self._map.entities)
                ):
                    scores[iid] = min(1.0, scores[iid] + self._entity_bonus)
                    found = True
            if found:  # the entity favours the intents that take one over those that take none
                for iid, intent in self._map.intents.items():
                    if not intent.entities and iid in scores:
                        scores[iid] = max(0.0, scores[iid] - self._entity_bonus)
        decisive = self._decisive(text)
        if decisive:  # a decision word favours the intents whose examples say one
            for iid in scores:
                bonus = self._entity_bonus if iid in self._deciding_intents else -self._entity_bonus
                scores[iid] = min(1.0, max(0.0, scores[iid] + bonus))
        if self._asks(text):  # a question is no answer: see the module docstring
            for iid in scores:
                if iid not in self._asking_intents:
                    scores[iid] = max(0.0, scores[iid] - QUESTION_PENALTY)
        return scores

    def _asks(self, text: str) -> bool:
        if isinstance(self._embedder, CharNgramEmbedder):  # its words: idioms ("почему бы и нет") folded
            words = self._embedder.words(text)
        else:
            words = normalize(text).split()
        return asks(words) or asks_what_you_do(words)

    def _affirms(self, text: str) -> bool:
        """Whether `text` affirms what was said back to the caller ("да, в 10, всё верно")."""
        if not isinstance(self._embedder, CharNgramEmbedder):
            return False
        return any(
            not negated and lemma(word).normal_form in AFFIRMING_LEMMAS
            for word, negated in self._embedder.tokens(text)
        )

    def _decisive(self, text: str) -> bool:
        return self.decides(text)

    def decides(self, text: str) -> bool:
        """Whether `text` says a decision a question beside it does not override (no FAQ precedence).

        A word of a `lexicon.DECISIVE_CONCEPTS` group, not negated: "дороговато, пожалуй
        откажусь" refuses, it does not ask about the price.
        """
        if not isinstance(self._embedder, CharNgramEmbedder):
            return False
        return any(
            not negated and concept(lemma(word).normal_form) in DECISIVE_CONCEPTS
            for word, negated in self._embedder.tokens(text)
        )

    async def intent_scores(self, text: str) -> dict[str, float]:
        """Each intent's score for `text` (empty for text without words)."""
        await self.setup()
        if not normalize(text):
            return {}
        (vec,) = await self._embed([text])
        return self._intent_scores_of(text, vec)

    async def label_scores(self, text: str) -> dict[str, float]:
        """Every intent's and FAQ entry's score for `text`, by label ("intent:<id>", "faq:<id>").

        One embedding for both; scores as `classify_intent` and `find_faq_answer` see them (the
        entity bonus included). Empty for text without words. Raises `ClassifierError` when the
        embedder fails.
        """
        await self.setup()
        if not normalize(text):
            return {}
        (vec,) = await self._embed([text])
        out = {intent_label(i): s for i, s in self._intent_scores_of(text, vec).items()}
        out.update({faq_label(f): s for f, s in self._faq_scores_of(text, vec).items()})
        return out

    async def classify_intent(
        self, text: str, *, previous_leader: str | None = None
    ) -> tuple[IntentResult | None, str | None]:
        """The intent of `text` if it clears the threshold and no FAQ entry comes first, and the leader."""
        await self.setup()
        if not normalize(text):
            return None, None
        (vec,) = await self._embed([text])
        raw = self._best(vec, self._intent_vectors)
        scores = self._with_bonus(text, raw)
        if not scores:
            return None, None
        leader = max(scores, key=scores.__getitem__)
        if (
            previous_leader is not None
            and previous_leader in scores
            and scores[previous_leader] >= scores[leader] - STICKY_MARGIN
        ):
            leader = previous_leader
        score = scores[leader]
        if score < self._map.settings.intent_threshold:
            return None, leader
        if not self.decides(text) and faq_first(
            raw, self._faq_scores_of(text, vec), self._map.settings.faq_threshold
        ):
            return None, leader
        intent = self._map.intents[leader]
        entities = extract_entities(text, intent.entities, self._map.entities)
        return IntentResult(leader, score, entities, leader), leader

    async def find_faq_answer(self, text: str) -> FaqAnswer | None:
        """The FAQ entry closest to `text` if it clears `settings.faq_threshold`."""
        await self.setup()
        if not normalize(text) or not self._faq_vectors:
            return None
        (vec,) = await self._embed([text])
        scores = self._faq_scores_of(text, vec)
        best = max(scores, key=scores.__getitem__)
        if scores[best] < self._map.settings.faq_threshold:
            return None
        return FaqAnswer(best, scores[best])
