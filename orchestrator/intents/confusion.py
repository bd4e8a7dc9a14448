"""`map lint`: examples the local classifier confuses, by leave-one-out over the map's own examples.

Each intent example and FAQ question is scored, as the classifier would score a caller's words,
against every OTHER example of the map (itself left out): the best cosine per intent (plus the
entity bonus when the text carries one of the intent's entities) and per FAQ entry. When the
winner is another intent or FAQ entry and clears that kind's threshold (`intent_threshold`,
`faq_threshold`), the example would be classified there: a caller saying it is routed wrong.
(An example that is merely far from everything, winner below the threshold, is not reported.) Reported as warnings, with the example's JSON path and where it went, so the map's
author adds distinguishing examples or merges the two.

Only the local embedder (`CharNgramEmbedder`, the default) is used: lint runs offline.
"""

from __future__ import annotations

from orchestrator.dialogue_map.lint import LintIssue
from orchestrator.dialogue_map.loader import json_path
from orchestrator.dialogue_map.models import DialogueMap
from orchestrator.intents.classifier import ENTITY_BONUS, faq_label, intent_label
from orchestrator.intents.embedder import SparseVector
from orchestrator.intents.entities import extract_entities
from orchestrator.intents.ngram import CharNgramEmbedder, sparse_dot


def confusion_issues(m: DialogueMap, embedder: CharNgramEmbedder | None = None) -> list[LintIssue]:
    """A warning for every example whose leave-one-out winner is another intent or FAQ entry."""
    emb = embedder or CharNgramEmbedder()
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
    for k, (label, path, text, vec) in enumerate(rows):
        best: dict[str, float] = {}
        for j, (other, _, _, ovec) in enumerate(rows):
            if j != k:
                best[other] = max(best.get(other, 0.0), sparse_dot(vec, ovec))
        for iid, intent in m.intents.items():
            lab = intent_label(iid)
            if lab in best and intent.entities and extract_entities(text, intent.entities, m.entities):
                best[lab] = min(1.0, best[lab] + ENTITY_BONUS)
        if not best:
            continue
        winner = max(best, key=best.__getitem__)
        threshold = m.settings.faq_threshold if winner.startswith("faq:") else m.settings.intent_threshold
        if winner != label and best[winner] >= threshold and best[winner] > best.get(label, 0.0):
            own = best.get(label, 0.0)
            issues.append(
                LintIssue(
                    "warning",
                    path,
                    f"{text!r} is closer to {winner} ({best[winner]:.2f}) than to the rest of {label} "
                    f"({own:.2f}): the classifier confuses them; add distinguishing examples",
                )
            )
    return issues
