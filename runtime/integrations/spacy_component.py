"""A spaCy pipeline component: ``nlp.add_pipe("tommer", config={"model": "bundle"})``.

Mentions go to ``doc.spans["mentions"]`` (``spans_key``) with the label ``MENTION`` (ToMMeR's
mentions are untyped) and their probabilities in ``doc.spans["mentions"].attrs["scores"]``
(a float32 array in span order, as spaCy's ``spancat`` does), so displaCy's span view shows
them: ``displacy.render(doc, style="span", options={"spans_key": "mentions"})``.

Token boundaries: ToMMeR gives character offsets from the bundle's own tokenizer, which
need not fall on spaCy's token boundaries. ``alignment_mode="expand"`` (the default) widens
a mention to the spaCy tokens it touches (``Doc.char_span``), so no mention is lost; when
two mentions widen to the same tokens, one span is kept with the higher score. "contract"
keeps the tokens inside the mention and "strict" drops mentions off token boundaries (both
may drop mentions). ``nlp.pipe`` annotates ``batch_size`` documents per call of the graph.

Registered through the ``spacy_factories`` entry point, so ``add_pipe("tommer")`` works
once tommer is installed, without importing this module.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
from spacy.language import Language
from spacy.tokens import Doc, Span, SpanGroup
from spacy.util import minibatch

from ..core.annotator import Annotator
from ..core.chunk import Chunk
from ..errors import InputError

ALIGNMENT_MODES = ("expand", "contract", "strict")


class TommerComponent:
    def __init__(self, name: str, annotator: Annotator, spans_key: str = "mentions", label: str = "MENTION",
                 alignment_mode: str = "expand", batch_size: int = 64):
        if alignment_mode not in ALIGNMENT_MODES:
            raise InputError(f"alignment_mode {alignment_mode!r}: expected one of {', '.join(ALIGNMENT_MODES)}")
        self.name, self.annotator, self.spans_key, self.label = name, annotator, spans_key, label
        self.alignment_mode, self.batch_size = alignment_mode, batch_size

    def __call__(self, doc: Doc) -> Doc:
        self._annotate([doc])
        return doc

    def pipe(self, stream: Iterable[Doc], batch_size: int | None = None) -> Iterator[Doc]:
        for docs in minibatch(stream, size=batch_size or self.batch_size):
            self._annotate(docs)
            yield from docs

    def _annotate(self, docs: list[Doc]) -> None:
        chunk = self.annotator.process(Chunk(texts=[doc.text for doc in docs]))
        for doc, mentions in zip(docs, chunk.mentions.to_pylist()):
            best: dict[tuple[int, int], tuple[float, Span]] = {}
            for m in mentions:
                span = doc.char_span(m["start"], m["end"], label=self.label, alignment_mode=self.alignment_mode)
                if span is not None and best.get((span.start, span.end), (-1.0,))[0] < m["score"]:
                    best[(span.start, span.end)] = (m["score"], span)
            ordered = [best[k] for k in sorted(best)]
            doc.spans[self.spans_key] = SpanGroup(doc, name=self.spans_key, spans=[s for _, s in ordered],
                                                  attrs={"scores": np.array([p for p, _ in ordered], np.float32)})


@Language.factory("tommer", default_config={"model": None, "spans_key": "mentions", "label": "MENTION",
                                            "threshold": 0.5, "decoding": "threshold", "alignment_mode": "expand",
                                            "batch_size": 64, "provider": "auto"})
def make_tommer(nlp: Language, name: str, model: str | None, spans_key: str, label: str, threshold: float,
                decoding: str, alignment_mode: str, batch_size: int, provider: str) -> TommerComponent:
    if not model:
        raise InputError('the tommer component needs a bundle: nlp.add_pipe("tommer", config={"model": "path/to/bundle"})')
    annotator = Annotator.from_bundle(model, threshold=threshold, decoding=decoding, provider=provider)
    return TommerComponent(name, annotator, spans_key, label, alignment_mode, batch_size)
