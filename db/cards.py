"""What the describers and encoders read about each served model version, in one query."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import Connection, text

# Example prompts and images come only from SFW images: NSFW images are never used downstream.
CARDS_SQL = """
SELECT s.version_id, s.model_name, s.version_name, s.model_type, s.base_model, s.base_model_family,
       s.trained_words, s.tags, s.model_download_count,
       concat_ws(E'\\n\\n', nullif(m.description_text, ''), nullif(v.description_text, '')) AS card_text,
       coalesce((SELECT array_agg(p.prompt ORDER BY p.position) FROM (
            SELECT DISTINCT ON (i.prompt) i.prompt, i.position FROM images i
            WHERE i.version_id = s.version_id AND NOT i.nsfw AND i.prompt IS NOT NULL
            ORDER BY i.prompt, i.position) p), '{}') AS example_prompts,
       coalesce((SELECT array_agg(i.url ORDER BY i.position) FROM images i
            WHERE i.version_id = s.version_id AND NOT i.nsfw AND i.url IS NOT NULL), '{}') AS example_image_urls,
       coalesce((SELECT array_agg(r.weight) FROM image_resources r JOIN images i
            ON i.id = r.image_id AND i.version_id = r.version_id
            WHERE r.resolved_version_id = s.version_id AND r.weight IS NOT NULL AND NOT i.nsfw), '{}') AS example_weights
FROM served_model_versions s
JOIN models m ON m.id = s.model_id
JOIN model_versions v ON v.id = s.version_id
WHERE s.version_id % :shards = :shard
ORDER BY s.version_id
"""


def served_cards(conn: Connection, shard: int = 0, shards: int = 1, max_examples: int = 8) -> Iterator[dict]:
    """Served versions with their card, tags, trigger words and up to `max_examples` SFW prompts and image URLs."""
    for row in conn.execute(text(CARDS_SQL), {"shard": shard, "shards": shards}).mappings():
        card = dict(row)
        card["example_prompts"] = card["example_prompts"][:max_examples]
        card["example_image_urls"] = card["example_image_urls"][:max_examples]
        yield card
