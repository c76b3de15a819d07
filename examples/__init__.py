"""Examples shipped with Janus: a demo handler (``examples.handlers``) and a demo producer
(``python -m examples.producer``), used by ``compose.yaml``."""
