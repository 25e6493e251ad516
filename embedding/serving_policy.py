"""Decide, from the catalogue's evidence, what serving shows and how: each model's content level (crawlers.nsfw) and
each served version's role (crawlers.roles), stored for the search index and for SQL users (db/serving_policy.py).
Run by the retrieval_index asset after descriptions exist (a card's kind is part of the role evidence)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection

from crawlers.nsfw import content_level
from crawlers.roles import Card, Usage, decide_roles
from db.descriptions import DescriberKey, preferred_descriptions_sql
from db.serving_policy import embedding_usage, level_evidence, lora_usage, role_cards, store_levels, store_roles


@dataclass
class PolicyCounts:
    levels_changed: int = 0
    roles_changed: int = 0
    negatives: int = 0
    enhancers: int = 0


def refresh_serving_policy(conn: Connection, describer: DescriberKey) -> PolicyCounts:
    """Recompute every model's content level and every served version's role; store what changed."""
    counts = PolicyCounts()
    levels = {row["id"]: content_level(row["nsfw"], row["nsfw_level"], list(row["tags"] or ()),
                                       list(row["image_levels"])) for row in level_evidence(conn)}
    counts.levels_changed = store_levels(conn, {model: (found.level, found.reason) for model, found in levels.items()})
    cards = {row["version_id"]: Card(row["model_type"], row["model_name"], tuple(row["tags"] or ()), row["kind"])
             for row in role_cards(conn, describer.params(), preferred_descriptions_sql())}
    usage: dict[int, Usage] = {}
    for row in lora_usage(conn):
        usage[row["version_id"]] = Usage(prompts=tuple(row["prompts"]), galleries=row["galleries"])
    for row in embedding_usage(conn):
        usage[row["version_id"]] = Usage(in_negative=row["in_negative"], in_positive=row["in_positive"])
    roles = decide_roles(cards, usage)
    counts.roles_changed = store_roles(conn, {version: (role.role, role.reason) for version, role in roles.items()})
    counts.negatives = sum(role.role == "negative" for role in roles.values())
    counts.enhancers = sum(role.role == "enhancer" for role in roles.values())
    return counts
