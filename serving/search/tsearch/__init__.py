"""Postgres' `english` text search in Python (a twin of PostgreSQL 16's src/backend/tsearch), so the engine stems a
query's words exactly as `to_tsvector('english', ...)` stemmed the stored texts, without a round trip: `chars` (the
C library's character classes), `parser` (the default parser; `addresses` and `markup` hold its host/URL/path and
entity/tag states) and `english` (stop words and the Snowball stem). serving/search/words.py puts them together."""
