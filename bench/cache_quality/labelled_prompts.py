"""Labelled prompts for the category classifier: which source text belongs to which category.

Sources (DESIGN §9): CLINC150 (intent → category, mostly by domain with a few intents
moved: weather, time and traffic questions go stale in minutes whatever their domain),
`domain_questions.json` (subject → category) and the prompts written for this project in
`cache/data/extra_prompts.jsonl` (code, time-sensitive, health and legal prompts, which the
public sets lack). Train/test splits: CLINC's own `train`/`test`; domain questions and the
extra prompts alternate by position (even rows train, odd rows test).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parents[3] / "shared" / "data"

DOMAIN_CATEGORY = {
    "banking": "assistant",
    "credit_cards": "assistant",
    "home": "assistant",
    "work": "assistant",
    "auto_and_commute": "assistant",
    "travel": "assistant",
    "utility": "assistant",
    "kitchen_and_dining": "knowledge",
    "small_talk": "conversation",
    "meta": "conversation",
}
# Intents whose answers change within minutes or hours, whatever their CLINC domain.
INTENT_CATEGORY = {
    "weather": "time_sensitive",
    "date": "time_sensitive",
    "time": "time_sensitive",
    "traffic": "time_sensitive",
    "exchange_rate": "time_sensitive",
    "flight_status": "time_sensitive",
    "travel_alert": "time_sensitive",
    "how_busy": "time_sensitive",
    "definition": "knowledge",
    "measurement_conversion": "knowledge",
    "spelling": "knowledge",
    "translate": "knowledge",
    "plug_type": "knowledge",
    "vaccines": "health",
    "restaurant_reservation": "assistant",
    "confirm_reservation": "assistant",
    "cancel_reservation": "assistant",
    "accept_reservations": "assistant",
}
SUBJECT_CATEGORY = {
    "health": "health",
    "law": "legal",
    "computer science": "code",
    # "other" mixes jokes, accounting and trivia: not a category, left out.
}
KNOWLEDGE_SUBJECTS = {
    "history",
    "psychology",
    "economics",
    "engineering",
    "math",
    "chemistry",
    "physics",
    "business",
    "biology",
    "philosophy",
}


@dataclass(frozen=True, slots=True)
class Labelled:
    text: str
    category: str
    source: str  # clinc | domain | extra


def _clinc(split: str, data_dir: Path) -> list[Labelled]:
    domains = json.loads((data_dir / "clinc150_domains.json").read_text())
    intent_domain = {intent: domain for domain, intents in domains.items() for intent in intents}
    rows = json.loads((data_dir / "clinc150_data_full.json").read_text())[split]
    out = []
    for text, intent in rows:
        category = INTENT_CATEGORY.get(intent) or DOMAIN_CATEGORY[intent_domain[intent]]
        out.append(Labelled(text, category, "clinc"))
    return out


def _domain(data_dir: Path) -> list[Labelled]:
    out = []
    for row in json.loads((data_dir / "domain_questions.json").read_text()):
        subject = row["category"]
        category = SUBJECT_CATEGORY.get(subject) or (
            "knowledge" if subject in KNOWLEDGE_SUBJECTS else None
        )
        if category is not None:
            out.append(Labelled(row["question"], category, "domain"))
    return out


def _extra() -> list[Labelled]:
    text = resources.files("cache").joinpath("data", "extra_prompts.jsonl").read_text()
    return [
        Labelled(r["text"], r["category"], "extra") for r in map(json.loads, text.splitlines()) if r
    ]


def split(
    *, data_dir: Path = DATA_DIR, clinc_per_intent: int | None = 40
) -> tuple[list[Labelled], list[Labelled]]:
    """(train, test). `clinc_per_intent` caps CLINC's training rows per intent (its 100 per
    intent would drown the few hundred other prompts and cost embedding time for nothing)."""
    train = _clinc("train", data_dir)
    if clinc_per_intent is not None:
        seen: dict[str, int] = {}
        capped = []
        rows = json.loads((data_dir / "clinc150_data_full.json").read_text())["train"]
        for item, (_, intent) in zip(train, rows):
            seen[intent] = seen.get(intent, 0) + 1
            if seen[intent] <= clinc_per_intent:
                capped.append(item)
        train = capped
    test = _clinc("test", data_dir)
    for i, item in enumerate(_domain(data_dir) + _extra()):
        (train if i % 2 == 0 else test).append(item)
    return train, test
