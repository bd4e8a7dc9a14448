"""`map lint`: examples the local classifier confuses, by leave-one-out over the map's own examples.

Each intent example and FAQ question is scored, as the classifier would score a caller's words,
against every OTHER example of the map (itself left out): the best cosine per intent (plus the
entity bonus when the text carries one of the intent's entities) and per FAQ entry, routed as the
classifier routes (`classifier.route_label`: FAQ precedence, the intent over `intent_threshold`,
the FAQ entry over `faq_threshold`). When that route is another intent or FAQ entry, a caller
saying the example is routed wrong. (An example that is merely far from everything, routed
nowhere, is not reported.) Reported as warnings, with the example's JSON path and where it went,
so the map's author adds distinguishing examples or merges the two.

Only the local embedder (`CharNgramEmbedder`, the default) is used: lint runs offline.
"""

from __future__ import annotations

from orchestrator.dialogue_map.lint import LintIssue
from orchestrator.dialogue_map.loader import json_path
from orchestrator.dialogue_map.models import DialogueMap
from orchestrator.intents.classifier import ENTITY_BONUS, example_groups, faq_label, intent_label, route_label
from orchestrator.intents.embedder import SparseVector
from orchestrator.intents.entities import extract_entities
from orchestrator.intents.ngram import CharNgramEmbedder, sparse_dot


def confusion_issues(m: DialogueMap, embedder: CharNgramEmbedder | None = None) -> list[LintIssue]:
    """A warning for every example whose leave-one-out winner is another intent or FAQ entry."""
    emb = (embedder or CharNgramEmbedder()).fitted(example_groups(m))
    # (label, JSON path, text, vector) of every example
    rows: list[tuple[str, str, str, SparseVector]] = []
    for iid, intent in m.intents.items():
        base = json_path(("intents", iid))
        rows += [
            (intent_label(iid), f"{base}.examples[{i}]", ex, emb.embed_one(ex))
            for i, ex in enumerate(intent.examples)
        ]
    for fid, faq in m.faq.items():
        base = json_path(("faq", fid))
        rows += [
            (faq_label(fid), f"{base}.questions[{i}]", q, emb.embed_one(q))
            for i, q in enumerate(faq.questions)
        ]
    issues: list[LintIssue] = []
    settings = m.settings
    for k, (label, path, text, vec) in enumerate(rows):
        best: dict[str, float] = {}
        for j, (other, _, _, ovec) in enumerate(rows):
            if j != k:
                best[other] = max(best.get(other, 0.0), sparse_dot(vec, ovec))
        if not best:
            continue
        raw = {lab.partition(":")[2]: s for lab, s in best.items() if lab.startswith("intent:")}
        faqs = {lab.partition(":")[2]: s for lab, s in best.items() if lab.startswith("faq:")}
        scores = dict(raw)
        for iid, intent in m.intents.items():
            if iid in scores and intent.entities and extract_entities(text, intent.entities, m.entities):
                scores[iid] = min(1.0, scores[iid] + ENTITY_BONUS)
        winner = route_label(
            raw,
            scores,
            faqs,
            intent_threshold=settings.intent_threshold,
            faq_threshold=settings.faq_threshold,
        )
        if winner is None or winner == label:
            continue
        kind, _, ident = winner.partition(":")
        won = (scores if kind == "intent" else faqs)[ident]
        own_kind, _, own_id = label.partition(":")
        own = (scores if own_kind == "intent" else faqs).get(own_id, 0.0)
        issues.append(
            LintIssue(
                "warning",
                path,
                f"{text!r} is routed to {winner} ({won:.2f}) rather than the rest of {label} "
                f"({own:.2f}): the classifier confuses them; add distinguishing examples",
            )
        )
    return issues
