"""A stand-in for torchaudio in the consumer tests only.

LLaMA-Factory imports torchaudio at module level for audio datasets; no torchaudio wheel
matches torch 2.13, and the text loaders under test never call it. It has no
distribution metadata, so transformers still sees torchaudio as absent.
"""
