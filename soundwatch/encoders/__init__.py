"""Pretrained audio encoders: waveforms in, frame embeddings out.

- :mod:`~soundwatch.encoders.base`: the :class:`Encoder` interface;
- :mod:`~soundwatch.encoders.registry`: ``ENCODERS`` (by name, imported lazily) and the
  encoder instances detectors share;
- :mod:`~soundwatch.encoders.embed`: clips to cached frame embeddings and pooled vectors;
- :mod:`~soundwatch.encoders.pooling`: pooling over time;
- :mod:`~soundwatch.encoders.download` and :mod:`~soundwatch.encoders.checkpoint`:
  checkpoint files (find, verify, download, load) and the encoder base over one;
- one module per encoder family: ``random_cnn``, ``pretrained`` (EfficientAT), ``panns``,
  ``resnet``, ``vggish``, ``hf`` (AST, wav2vec 2.0).
"""
