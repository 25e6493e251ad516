"""The catalogue as serving shows it: version and model cards, file lookups by hash or name, and what an image's
A1111 parameters used, resolved to the zoo's versions. Only what the live search index holds is served (SFW, not
deleted, within the server's content level and likeness rules); the CLI and the HTTP API call these functions."""

from serving.catalogue.cards import model_card, thumbnails, version_card
from serving.catalogue.inspect import inspect_parameters, inspect_png
from serving.catalogue.lookup import lookup_file, lookup_hash

__all__ = ["inspect_parameters", "inspect_png", "lookup_file", "lookup_hash", "model_card", "thumbnails",
           "version_card"]
