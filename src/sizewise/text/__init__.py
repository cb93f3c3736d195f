"""Tokenization, vocabulary and word vectors for learners that do not bring their own tokenizer."""

from sizewise.text.vectors import load_word_vectors
from sizewise.text.vocab import WordVocabulary

__all__ = ["WordVocabulary", "load_word_vectors"]
