"""Finding evidence in a person's documents: load, chunk, tokenize, index and search them.
Subpackages: `embedders` (the sentence encoders) and `store` (the file index). `retrieval`
imports no other bitrag package (agent, eval and mcp_servers import it)."""
