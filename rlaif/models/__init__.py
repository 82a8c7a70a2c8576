"""Models: the embedded default, loading tokenizers and models, tokenizing, packed pairs."""
