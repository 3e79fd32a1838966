"""Finding evidence in a person's documents: load, chunk, tokenize, index and search them."""
