"""Two-level retrieval for a long-lived process: encode the query, answer both levels from the in-memory engine of
the newest search-index generation (serving/search/engine.py, kept current by serving/search/live.py)."""

from __future__ import annotations

import numpy as np
from sqlalchemy import Engine

from db.descriptions import DescriberKey
from embedding.encoders import ImageEncoder, TextEncoder
from embedding.refresh import space_dimension, space_name
from embedding.search_index import SearchIndex
from serving.search.engine import PoolSizes, SearchEngine
from serving.search.ranker import load_ranker
from serving.search.scoring import Weights
from serving.search.live import LiveIndex
from serving.search.results import Filters, Hit, SearchResult


class Retriever:
    """Query encoders + the live engine of the encoders' space. Thread-safe; build one per process and reuse it."""

    def __init__(self, db: Engine, text_encoder: TextEncoder, image_encoder: ImageEncoder | None = None, *,
                 describer: DescriberKey, weights: Weights | None = None, pools: PoolSizes = PoolSizes(),
                 watch: bool = False) -> None:
        """`weights` set by hand score every query; without them the learned ranker does when one is stored
        (serving/search/ranker.py), else the default weights."""
        self.db = db
        self.text_encoder, self.image_encoder = text_encoder, image_encoder
        self.space = space_name(text_encoder, image_encoder)
        self.dimension = space_dimension(text_encoder, image_encoder)
        self.describer_key = describer
        self.describer, self.prompt_version = describer.describer, describer.prompt_version
        self.weights, self.pools = weights, pools
        self.live = LiveIndex(db, self.space, self.dimension, self.engine_for, describer)
        if watch:
            self.live.watch()

    def engine_for(self, index: SearchIndex) -> SearchEngine:
        """The search engine over one loaded index, with this retriever's pool sizes and the ranker trained on
        that generation, if any."""
        return SearchEngine(index, self.weights or Weights(), self.pools, load_ranker(self.db, index))

    @property
    def search_engine(self) -> SearchEngine:
        return self.live.current

    def query_vector(self, query: str | None, image=None) -> np.ndarray:
        """[w_text * q_text || w_image * q_image], so its inner product with a stored [t || i] is
        w_text <q, t> + w_image <q, i>; the missing modality contributes nothing."""
        if not query and image is None:
            raise ValueError("a search needs a text query, an image, or both")
        vector = np.zeros(self.dimension, dtype=np.float32)
        text_dim, weights = self.text_encoder.text_dim, self.weights or Weights()
        if query:
            vector[:text_dim] = weights.text * self.text_encoder.encode_text([query])[0]
        if image is not None:
            if self.image_encoder is None:
                raise ValueError("this preset has no image encoder: search by text, or use ZOO_PRESET=full")
            vector[text_dim:] = weights.image * self.image_encoder.encode_images([image])[0]
        return vector

    def checkpoints(self, q: np.ndarray, top_k: int = 5, filters: Filters = Filters(),
                    words: str | None = None) -> list[Hit]:
        return self.search_engine.checkpoints(q, top_k, filters, self.weights, words=words)

    def adapters(self, q: np.ndarray, checkpoint: Hit | None, top_k: int = 10, filters: Filters = Filters(),
                 words: str | None = None) -> list[Hit]:
        return self.search_engine.adapters(q, checkpoint, top_k, filters, self.weights, words=words)

    def search(self, query: str | None, image=None, *, top_k: int = 10, top_checkpoints: int = 3,
               filters: Filters = Filters()) -> SearchResult:
        """Both levels for a text query, an image, or both: the checkpoints, then adapters for the first one."""
        q = self.query_vector(query, image)
        engine = self.search_engine  # one generation for both levels, whatever a swap does meanwhile
        return engine.search(q, query, top_k=top_k, top_checkpoints=top_checkpoints, filters=filters,
                             weights=self.weights)

