"""The answering side of bitrag: the LangGraph graph that routes, retrieves, decides and
answers (its nodes, evidence, verification, prompts and tools), the chat loop and the CLI.
The llama.cpp runtime lives in `agent.runtime`; imports point cli -> graph -> runtime, and
`agent` may import `retrieval` and (lazily, for commands) `eval` and `mcp_servers`."""
